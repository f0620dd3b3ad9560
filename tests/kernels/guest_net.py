"""NICs for a guest: taps in a private network namespace, and the QEMU options that use them.

A matrix entry with `nics` boots its guest inside a network namespace the harness makes
(never the host's): one tap per NIC there, each with a host address, a guest address and a
permanent neighbour entry for the guest's MAC, so traffic from the namespace goes out over the
tap from the first packet. Addresses are from 198.18.90.0/24 only (RFC 2544 benchmarking
space), one /26 per NIC so two taps never share a route; nothing leaves the namespace and the
guest. The guest learns its side (MAC, address) from NETPROF_GUEST_NET.

    virtio-mq4  virtio-net-pci, 4 queue pairs, vectors=10: one MSI-X vector per queue
                (virtioN-input.0..3 / virtioN-output.0..3) plus config and control
    e1000e      Intel 82574L, one rx and one tx vector (<if>-rx-0 / <if>-tx-0) and <if>
    vmxnet3     VMware's paravirtual NIC: rx and tx share a vector (<if>-rxtx-0), plus <if>-event-0
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

SUBNET = "198.18.90.0/24"
PREFIX_LEN = 26


@dataclass(frozen=True)
class NicModel:
    name: str        # what a matrix entry calls it
    device: str      # QEMU's -device driver
    queues: int = 1  # tap queues (multi_queue when > 1)
    extra: str = ""  # more -device properties


NIC_MODELS = {
    "virtio-mq4": NicModel("virtio-mq4", "virtio-net-pci", queues=4, extra="mq=on,vectors=10"),
    "e1000e": NicModel("e1000e", "e1000e"),
    "vmxnet3": NicModel("vmxnet3", "vmxnet3"),
}


@dataclass(frozen=True)
class GuestNic:
    model: NicModel
    tap: str
    mac: str
    host_address: str
    guest_address: str

    def qemu_opts(self, ident: str) -> list[str]:
        queues = f",queues={self.model.queues}" if self.model.queues > 1 else ""
        extra = f",{self.model.extra}" if self.model.extra else ""
        return ["-netdev", f"tap,id={ident},ifname={self.tap},script=no,downscript=no,vhost=off{queues}",
                "-device", f"{self.model.device},netdev={ident},mac={self.mac}{extra}"]


def plan_nics(models: tuple[str, ...], tag: str) -> tuple[GuestNic, ...]:
    """One NIC per model: tap npt<tag><i>, MAC 52:54:00:90:<i>:02, host .1 and guest .2 of the
    i-th /26 of SUBNET (i < 4)."""
    if len(models) > 4:
        raise ValueError("at most four NICs: one /26 of 198.18.90.0/24 each")
    nics = []
    for index, name in enumerate(models):
        if name not in NIC_MODELS:
            raise ValueError(f"unknown NIC model {name} (known: {', '.join(NIC_MODELS)})")
        base = index * 64
        nics.append(GuestNic(NIC_MODELS[name], f"npt{tag}{index}"[:15], f"52:54:00:90:{index:02x}:02",
                             f"198.18.90.{base + 1}", f"198.18.90.{base + 2}"))
    return tuple(nics)


def guest_env(nics: tuple[GuestNic, ...]) -> str:
    """NETPROF_GUEST_NET: `mac=guest/len=host` per NIC, comma-separated."""
    return ",".join(f"{nic.mac}={nic.guest_address}/{PREFIX_LEN}={nic.host_address}" for nic in nics)


def parse_guest_env(text: str) -> list[tuple[str, str, str]]:
    """(mac, guest address/len, host address) per NIC of NETPROF_GUEST_NET."""
    entries = []
    for item in filter(None, text.split(",")):
        mac, address, host = item.split("=")
        entries.append((mac.lower(), address, host))
    return entries


def qemu_opts(nics: tuple[GuestNic, ...]) -> str:
    return " ".join(opt for index, nic in enumerate(nics) for opt in nic.qemu_opts(f"n{index}"))


def _ip(*args: str, netns: str | None = None) -> None:
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    result = subprocess.run(argv, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")


class GuestNetwork:
    """The namespace and its taps, for the guest's lifetime (a context manager)."""

    def __init__(self, models: tuple[str, ...], tag: str | None = None) -> None:
        tag = tag or str(os.getpid() % 100000)
        self.netns = f"netprof-guest-{tag}"
        self.nics = plan_nics(models, tag)

    def __enter__(self) -> GuestNetwork:
        _ip("netns", "add", self.netns)
        try:
            _ip("link", "set", "lo", "up", netns=self.netns)
            for nic in self.nics:
                mode = ["mode", "tap"] + (["multi_queue"] if nic.model.queues > 1 else [])
                _ip("tuntap", "add", "dev", nic.tap, *mode, netns=self.netns)
                _ip("addr", "add", f"{nic.host_address}/{PREFIX_LEN}", "dev", nic.tap, netns=self.netns)
                _ip("link", "set", nic.tap, "up", netns=self.netns)
                _ip("neigh", "replace", nic.guest_address, "lladdr", nic.mac, "dev", nic.tap,
                    "nud", "permanent", netns=self.netns)
        except Exception:
            self.close()
            raise
        return self

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns]

    def close(self) -> None:
        # Deleting the namespace deletes its taps (QEMU has exited by then).
        subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True)

    def __exit__(self, *exc) -> None:
        self.close()
