"""A small client of the Kubernetes CRI (runtime.v1) over a containerd socket, making pods the
way kubelet does: sandbox first (metadata, cgroup parent, log directory), then containers.

The message classes are generated from `cri.proto` (beside this file) with grpcio-tools at
test time, into a cache directory keyed by the proto's content and the generator's version:
generated protobuf code is tied to the protobuf runtime it was made for, so checked-in code
would break on the next protobuf release, while generating takes well under a second.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

PROTO = Path(__file__).with_name("cri.proto")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "netprof/cri-stubs"
RPC_TIMEOUT_S = 60.0
_generated_lock = threading.Lock()


def generated_modules() -> tuple[ModuleType, ModuleType]:
    """(cri_pb2, cri_pb2_grpc), generated on first use into the cache."""
    import grpc_tools
    from grpc_tools import protoc

    key = hashlib.sha256(PROTO.read_bytes() + grpc_tools.__file__.encode()
                         + getattr(grpc_tools, "__version__", "").encode()).hexdigest()[:16]
    out = CACHE / key
    with _generated_lock:
        if not (out / "cri_pb2_grpc.py").is_file():
            out.mkdir(parents=True, exist_ok=True)
            include = Path(protoc.__file__).parent / "_proto"
            status = protoc.main(["grpc_tools.protoc", f"-I{PROTO.parent}", f"-I{include}",
                                  f"--python_out={out}", f"--grpc_python_out={out}", PROTO.name])
            if status != 0:
                raise RuntimeError(f"protoc failed on {PROTO} ({status})")
        if str(out) not in sys.path:
            sys.path.insert(0, str(out))
    return importlib.import_module("cri_pb2"), importlib.import_module("cri_pb2_grpc")


@dataclass
class CriPod:
    """A pod made through CRI, as the test knows it from what it asked for."""
    namespace: str
    name: str
    uid: str
    sandbox_id: str
    host_network: bool
    containers: dict[str, str] = field(default_factory=dict)  # name → container id
    netns_path: str = ""     # the sandbox's netns as the runtime reports it ("" = none)
    pause_pid: int = 0
    netns_inode: int = 0     # of the pause process's netns (the node's for hostNetwork)

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def pause_netns(self) -> str:
        return f"/proc/{self.pause_pid}/ns/net"


class CriClient:
    def __init__(self, socket: Path):
        import grpc

        self.pb, grpc_mod = generated_modules()
        self._channel = grpc.insecure_channel(f"unix://{socket}")
        self.runtime = grpc_mod.RuntimeServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def version(self, timeout_s: float = 5.0):
        return self.runtime.Version(self.pb.VersionRequest(version="v1"), timeout=timeout_s)

    def run_pod(self, namespace: str, name: str, uid: str, log_root: Path, *, host_network: bool = False,
                qos: str = "besteffort") -> tuple[CriPod, object]:
        pb = self.pb
        node_mode = pb.NODE if host_network else pb.POD
        log_dir = log_root / f"{namespace}_{name}_{uid}"
        log_dir.mkdir(parents=True, exist_ok=True)  # kubelet makes it before asking the runtime
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace=namespace, attempt=0),
            hostname="" if host_network else name,  # a hostNetwork pod has the node's UTS namespace
            log_directory=str(log_dir),
            labels={"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": namespace,
                    "io.kubernetes.pod.uid": uid},
            linux=pb.LinuxPodSandboxConfig(
                # kubelet's cgroupfs driver: /kubepods[/<qos>]/pod<uid>
                cgroup_parent=f"/kubepods/{qos}/pod{uid}",
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=node_mode, pid=pb.CONTAINER, ipc=pb.POD))),
        )
        reply = self.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=RPC_TIMEOUT_S)
        pod = CriPod(namespace, name, uid, reply.pod_sandbox_id, host_network)
        info = self.sandbox_info(pod.sandbox_id)
        pod.pause_pid = int(info.get("pid", 0))
        pod.netns_path = sandbox_netns_path(info)
        pod.netns_inode = os.stat(pod.pause_netns).st_ino  # taken while the pod exists
        return pod, config

    def sandbox_info(self, sandbox_id: str) -> dict:
        """containerd's verbose status: {"pid": <pause>, "runtimeSpec": {...}, ...}."""
        reply = self.runtime.PodSandboxStatus(
            self.pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True), timeout=RPC_TIMEOUT_S)
        return json.loads(reply.info.get("info", "{}"))

    def start_container(self, pod: CriPod, config, name: str, image: str, command: list[str]) -> str:
        pb = self.pb
        node_mode = pb.NODE if pod.host_network else pb.POD
        container = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=image),
            command=command,
            labels={"io.kubernetes.container.name": name},
            log_path=f"{name}/0.log",
            linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
                namespace_options=pb.NamespaceOption(network=node_mode, pid=pb.CONTAINER, ipc=pb.POD))),
        )
        created = self.runtime.CreateContainer(
            pb.CreateContainerRequest(pod_sandbox_id=pod.sandbox_id, config=container, sandbox_config=config),
            timeout=RPC_TIMEOUT_S)
        self.runtime.StartContainer(pb.StartContainerRequest(container_id=created.container_id),
                                    timeout=RPC_TIMEOUT_S)
        pod.containers[name] = created.container_id
        return created.container_id

    def delete_pod(self, pod: CriPod) -> None:
        """What kubelet does when a pod is deleted: containers stopped and removed, then the
        sandbox (the runtime tears down its netns and network)."""
        pb = self.pb
        for container_id in pod.containers.values():
            self.runtime.StopContainer(pb.StopContainerRequest(container_id=container_id, timeout=0),
                                       timeout=RPC_TIMEOUT_S)
            self.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=container_id),
                                         timeout=RPC_TIMEOUT_S)
        pod.containers.clear()
        self.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.sandbox_id), timeout=RPC_TIMEOUT_S)
        self.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.sandbox_id),
                                      timeout=RPC_TIMEOUT_S)


def sandbox_netns_path(info: dict) -> str:
    """The network namespace path in the sandbox's runtime spec ("" when it has none)."""
    spec = info.get("runtimeSpec") or {}
    for namespace in (spec.get("linux") or {}).get("namespaces") or []:
        if namespace.get("type") == "network":
            return namespace.get("path", "")
    return ""
