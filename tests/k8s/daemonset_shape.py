"""deploy/daemonset.yaml's netprof container as a `podman run` command line: the one source
of truth for how the image runs, so a test running the image runs it as Kubernetes would.

Every field of the pod spec, the container, its securityContext and its volumes is either
translated or listed here as having no podman counterpart; anything else is an error. So a
field added to the manifest that this does not know fails the tests (the manifest and the
podman run cannot drift apart silently).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

DAEMONSET = Path(__file__).resolve().parents[2] / "deploy/daemonset.yaml"

# Pod and container fields that have no effect on how the container runs on one node.
_POD_SPEC_ONLY_FOR_THE_CLUSTER = {"serviceAccountName", "automountServiceAccountToken", "dnsPolicy",
                                  "tolerations", "containers", "volumes", "hostNetwork", "hostPID",
                                  "terminationGracePeriodSeconds"}
_CONTAINER_ONLY_FOR_THE_CLUSTER = {"name", "image", "imagePullPolicy", "ports", "readinessProbe",
                                   "args", "env", "resources", "securityContext", "volumeMounts"}
_SECURITY_KEYS = {"privileged", "runAsUser", "runAsNonRoot", "readOnlyRootFilesystem",
                  "allowPrivilegeEscalation", "seccompProfile", "capabilities"}
_VOLUME_KINDS = {"hostPath", "emptyDir"}


class ShapeError(ValueError):
    """The manifest has something this translation does not know."""


@dataclass(frozen=True)
class PodmanRun:
    options: list[str]   # between `podman run` and the image
    args: list[str]      # after the image (the container's args)
    host_paths: dict[str, str]   # volume name → host path, as the manifest says


def daemonset_container(path: Path = DAEMONSET) -> tuple[dict, dict]:
    """(pod spec, the netprof container) of the DaemonSet."""
    for document in yaml.safe_load_all(path.read_text()):
        if document and document.get("kind") == "DaemonSet":
            spec = document["spec"]["template"]["spec"]
            return spec, next(c for c in spec["containers"] if c["name"] == "netprof")
    raise ShapeError(f"no DaemonSet in {path}")


def _unknown(where: str, keys, known) -> None:
    extra = sorted(set(keys) - set(known))
    if extra:
        raise ShapeError(f"{where}: no podman translation for {extra}")


def podman_run(path: Path = DAEMONSET, remap: dict[str, str] | None = None,
               empty_dir_root: Path | None = None) -> PodmanRun:
    """The options that give a podman container the DaemonSet pod's shape. `remap`: host
    path → path to mount instead (a test's private containerd state for /run/containerd);
    `empty_dir_root`: where emptyDir volumes are made (a directory each)."""
    remap = remap or {}
    spec, container = daemonset_container(path)
    _unknown("pod spec", spec, _POD_SPEC_ONLY_FOR_THE_CLUSTER)
    _unknown("container", container, _CONTAINER_ONLY_FOR_THE_CLUSTER)
    options: list[str] = []
    if spec.get("hostNetwork"):
        options += ["--network", "host"]
    if spec.get("hostPID"):
        options += ["--pid", "host"]
    if "terminationGracePeriodSeconds" in spec:
        options += ["--stop-timeout", str(spec["terminationGracePeriodSeconds"])]

    security = container.get("securityContext", {})
    _unknown("securityContext", security, _SECURITY_KEYS)
    if security.get("privileged"):
        options.append("--privileged")
    if "runAsUser" in security:
        options += ["--user", str(security["runAsUser"])]
    if security.get("readOnlyRootFilesystem"):
        # Kubernetes mounts nothing writable besides the pod's volumes: no podman tmpfs.
        options += ["--read-only", "--read-only-tmpfs=false"]
    if security.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    seccomp = security.get("seccompProfile", {}).get("type")
    if seccomp not in (None, "RuntimeDefault"):
        raise ShapeError(f"seccompProfile {seccomp}: only RuntimeDefault (podman's default) is translated")
    capabilities = security.get("capabilities", {})
    _unknown("capabilities", capabilities, {"drop", "add"})
    for capability in capabilities.get("drop", []):
        options += ["--cap-drop", capability]
    for capability in capabilities.get("add", []):
        options += ["--cap-add", capability]

    for variable in container.get("env", []):
        _unknown("env", variable, {"name", "value"})
        options += ["--env", f"{variable['name']}={variable['value']}"]
    limits = container.get("resources", {}).get("limits", {})
    if "memory" in limits:
        options += ["--memory", limits["memory"].replace("Mi", "m").replace("Gi", "g")]

    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    host_paths: dict[str, str] = {}
    for mount in container.get("volumeMounts", []):
        _unknown("volumeMount", mount, {"name", "mountPath", "readOnly", "mountPropagation"})
        volume = volumes[mount["name"]]
        kinds = set(volume) - {"name"}
        _unknown(f"volume {mount['name']}", kinds, _VOLUME_KINDS)
        if "hostPath" in volume:
            _unknown(f"hostPath {mount['name']}", volume["hostPath"], {"path", "type"})
            source = volume["hostPath"]["path"]
            host_paths[mount["name"]] = source
            source = remap.get(source, source)
            if volume["hostPath"].get("type") == "DirectoryOrCreate":
                Path(source).mkdir(parents=True, exist_ok=True)
        else:
            if empty_dir_root is None:
                raise ShapeError(f"emptyDir {mount['name']} needs a directory to stand in for it")
            source = str(empty_dir_root / mount["name"])
            Path(source).mkdir(parents=True, exist_ok=True)
        flags = ["ro"] if mount.get("readOnly") else ["rw"]
        propagation = mount.get("mountPropagation")
        if propagation == "HostToContainer":
            flags.append("rslave")
        elif propagation not in (None, "None"):
            raise ShapeError(f"mountPropagation {propagation} is not translated")
        options += ["-v", f"{source}:{mount['mountPath']}:{','.join(flags)}"]
    return PodmanRun(options, list(container.get("args", [])), host_paths)
