"""NAPI polls of a device that has its own NAPI instance, named and charged to its pod.

A veth with GRO on receives through its own NAPI instance (veth_napi_enable, since 5.13),
unlike the per-CPU backlog the other tests see. The raw napi_poll program gets only the
napi_struct: this is where it must read the device's name and network namespace from
napi->dev itself (bpf/napi.bpf.c), and every pod's device is called eth0."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from profiler.lab.topology import NODE_NAME, Lab
from profiler.probes.napi import NapiProbe, device_name
from tests.udp_blast import blast

pytestmark = pytest.mark.usefixtures("bpf_ready", "lab_ready")

PORT = 9310
DATAGRAMS = 5_000
POD_DEVICE = "eth0"

# Device features through the SIOCETHTOOL ioctl, as `ethtool -K` sets them, without needing
# ethtool: argv is the device, the set and get commands and the value; prints what the
# kernel reports afterwards. Run in the device's netns.
_SET_FEATURE = r"""
import ctypes, fcntl, socket, struct, sys
SIOCETHTOOL = 0x8946
def ethtool(command, data):
    value = ctypes.create_string_buffer(struct.pack("II", command, data))
    ifreq = struct.pack("16sP16x", sys.argv[1].encode(), ctypes.addressof(value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, SIOCETHTOOL, ifreq)
    return struct.unpack("II", value.raw[:8])[1]
ethtool(int(sys.argv[2]), int(sys.argv[4]))
print(ethtool(int(sys.argv[3]), 0))
"""
ETHTOOL_GTSO, ETHTOOL_STSO, ETHTOOL_GGRO, ETHTOOL_SGRO = 0x1e, 0x1f, 0x2b, 0x2c


def set_feature(argv_prefix: list[str], device: str, set_command: int, get_command: int, value: int) -> None:
    argv = [*argv_prefix, sys.executable, "-c", _SET_FEATURE, device, str(set_command), str(get_command), str(value)]
    result = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=True)
    assert result.stdout.strip() == str(value), f"{argv[-4:]}: the kernel reports {result.stdout!r}"


def receive_through_napi(lab: Lab, pod: str) -> None:
    """The pod's eth0 receives through its own NAPI instance: GRO on for it, and TSO off on
    its peer in the lab node's netns, since veth hands a forwarded skb from a TSO-capable
    sender to netif_rx, not to GRO (veth_skb_is_eligible_for_gro)."""
    set_feature(lab.exec_argv(pod, []), POD_DEVICE, ETHTOOL_SGRO, ETHTOOL_GGRO, 1)
    set_feature(lab.exec_argv(NODE_NAME, []), lab.pods[pod].host_veth, ETHTOOL_STSO, ETHTOOL_GTSO, 0)


def rx_packets(lab: Lab, pod: str) -> int:
    """The kernel's received-packets count of the pod's eth0 (netlink, in its netns)."""
    out = lab.run(pod, ["ip", "-s", "-j", "link", "show", POD_DEVICE]).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["packets"])


def polls_by_device(probe: NapiProbe) -> dict[tuple[str, int], tuple[int, int]]:
    """(device name, netns inode) → (polls, packets), summed over CPUs."""
    counts = probe.read()
    totals: dict[tuple[str, int], tuple[int, int]] = {}
    for key, count in zip(counts.devices, counts.counts):
        device = (device_name(bytes(key["name"])), int(key["netns_inode"]))
        polls, packets = totals.get(device, (0, 0))
        totals[device] = (polls + int(count["polls"]), packets + int(count["packets"]))
    return totals


def test_a_gro_veth_polls_under_its_own_name_in_its_pods_netns(loader):
    from profiler.kernel.shim import kernel_version_code

    if kernel_version_code(loader.info.release) < kernel_version_code("5.13"):
        # veth runs a NAPI instance of its own only with XDP before 5.13 ("veth: allow
        # enabling NAPI even without XDP"): GRO on changes nothing, every packet goes
        # through the CPU's backlog (5.10: all 5000 polls under "(no_device)").
        pytest.skip(f"{loader.info.release}: veth has no NAPI of its own without XDP before 5.13")
    with Lab.up(["server", "client", "idle"]) as lab:
        receive_through_napi(lab, "server")
        receive_through_napi(lab, "idle")  # a NAPI instance named eth0 too, in another netns, that gets nothing
        inode = {pod: lab.pods[pod].netns_inode for pod in lab.pods}
        probe = NapiProbe()
        status = probe.attach(loader)
        assert status.attached, status.error
        try:
            received_before = rx_packets(lab, "server")
            blast(lab, PORT, DATAGRAMS)
            totals = polls_by_device(probe)
            received = rx_packets(lab, "server") - received_before
        finally:
            probe.detach()
    server = (POD_DEVICE, inode["server"])
    assert server in totals, sorted(totals)
    polls, packets = totals[server]
    # Every datagram that reached the server's eth0 (the kernel's own rx count) came through
    # its NAPI instance (a UDP sink drops on a full buffer after that, not before). Nearly
    # all the client sent: under one TCG thread 18 of 5000 were lost on the way, in the node.
    assert received >= DATAGRAMS * 0.95, (received, DATAGRAMS)
    assert packets >= received, (totals[server], received)
    assert 0 < polls <= packets
    # The client's eth0 has no NAPI instance (GRO off); the idle pod's has one and was sent
    # nothing but, at most, neighbour discovery.
    assert (POD_DEVICE, inode["client"]) not in totals, sorted(totals)
    idle = totals.get((POD_DEVICE, inode["idle"]), (0, 0))
    assert idle[1] < 20, idle
