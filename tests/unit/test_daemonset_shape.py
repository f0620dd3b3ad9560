"""deploy/daemonset.yaml → the podman command line tests/k8s runs the image with: what the
manifest says is what podman gets, and a manifest field with no translation is an error
(so the two cannot drift apart)."""
from __future__ import annotations

import pytest
import yaml

from tests.k8s.daemonset_shape import DAEMONSET, ShapeError, podman_run


def pairs(options: list[str], flag: str) -> list[str]:
    return [options[i + 1] for i, option in enumerate(options) if option == flag]


def test_the_daemonsets_shape_in_podman_options(tmp_path):
    run = podman_run(empty_dir_root=tmp_path, remap={"/run/containerd": "/tmp/node/run/containerd"})
    options = run.options
    assert "--privileged" not in options
    assert pairs(options, "--cap-drop") == ["ALL"]
    assert pairs(options, "--cap-add") == ["BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN"]
    assert {"--read-only", "--read-only-tmpfs=false"} <= set(options)
    assert pairs(options, "--security-opt") == ["no-new-privileges"]
    assert pairs(options, "--network") == ["host"] and pairs(options, "--pid") == ["host"]
    assert pairs(options, "--user") == ["0"]
    assert pairs(options, "--env") == ["NETPROF_CACHE_DIR=/var/cache/netprof"]
    mounts = pairs(options, "-v")
    assert "/sys:/sys:ro" in mounts and "/sys/kernel/btf:/sys/kernel/btf:ro" in mounts
    assert "/tmp/node/run/containerd:/run/containerd:ro" in mounts          # remapped
    assert "/run/netns:/run/netns:ro,rslave" in mounts                      # HostToContainer
    assert f"{tmp_path}/cache:/var/cache/netprof:rw" in mounts               # emptyDir
    assert run.args == ["serve", "--listen", "0.0.0.0:9464"]


@pytest.mark.parametrize("edit, complaint", [
    (lambda c, s: c["securityContext"].update(procMount="Unmasked"), "procMount"),
    (lambda c, s: c["securityContext"]["capabilities"]["add"].append("SYS_PTRACE") or None, None),
    (lambda c, s: c.update(lifecycle={"preStop": {}}), "lifecycle"),
    (lambda c, s: s["volumes"].append({"name": "x", "configMap": {"name": "x"}})
     or c["volumeMounts"].append({"name": "x", "mountPath": "/x"}), "configMap"),
    (lambda c, s: s.update(hostIPC=True), "hostIPC"),
    (lambda c, s: c["securityContext"].update(seccompProfile={"type": "Unconfined"}), "Unconfined"),
])
def test_a_manifest_change_is_translated_or_refused(tmp_path, edit, complaint):
    documents = [d for d in yaml.safe_load_all(DAEMONSET.read_text()) if d]
    daemonset = next(d for d in documents if d["kind"] == "DaemonSet")
    spec = daemonset["spec"]["template"]["spec"]
    edit(spec["containers"][0], spec)
    changed = tmp_path / "daemonset.yaml"
    changed.write_text(yaml.safe_dump_all(documents))
    if complaint is None:  # a change the translation knows shows up in the options
        assert "SYS_PTRACE" in pairs(podman_run(changed, empty_dir_root=tmp_path).options, "--cap-add")
    else:
        with pytest.raises(ShapeError, match=complaint):
            podman_run(changed, empty_dir_root=tmp_path)
