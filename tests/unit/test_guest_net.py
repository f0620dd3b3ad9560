"""The kernel harness's NIC guests (tests/kernels/guest_net.py, traffic.py, the mq/nics
entries): what QEMU is asked for and which addresses are used, without booting anything."""
from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from tests.kernels import guest_net, matrix, traffic, vm
from tests.kernels.provision import BootableKernel


def test_virtio_mq_options_ask_for_four_queues_and_a_vector_each():
    (nic,) = guest_net.plan_nics(("virtio-mq4",), "7")
    opts = guest_net.qemu_opts((nic,))
    assert opts == ("-netdev tap,id=n0,ifname=npt70,script=no,downscript=no,vhost=off,queues=4 "
                    "-device virtio-net-pci,netdev=n0,mac=52:54:00:90:00:02,mq=on,vectors=10")


def test_each_nic_gets_its_own_slash_26_of_the_benchmark_subnet():
    nics = guest_net.plan_nics(("e1000e", "vmxnet3"), "1")
    subnet = ipaddress.ip_network(guest_net.SUBNET)
    nets = set()
    for nic in nics:
        host = ipaddress.ip_interface(f"{nic.host_address}/{guest_net.PREFIX_LEN}")
        guest = ipaddress.ip_interface(f"{nic.guest_address}/{guest_net.PREFIX_LEN}")
        assert host.network == guest.network and host.network.subnet_of(subnet)
        nets.add(host.network)
    assert len(nets) == 2
    assert [nic.tap for nic in nics] == ["npt10", "npt11"]
    assert "queues=" not in guest_net.qemu_opts(nics)  # single-queue taps, no multi_queue


def test_guest_env_round_trip():
    nics = guest_net.plan_nics(("e1000e", "vmxnet3"), "1")
    assert guest_net.parse_guest_env(guest_net.guest_env(nics)) == [
        ("52:54:00:90:00:02", "198.18.90.2/26", "198.18.90.1"),
        ("52:54:00:90:01:02", "198.18.90.66/26", "198.18.90.65"),
    ]


def test_unknown_model_and_too_many_nics_are_refused():
    with pytest.raises(ValueError, match="unknown NIC model"):
        guest_net.plan_nics(("rtl8139",), "1")
    with pytest.raises(ValueError, match="at most four"):
        guest_net.plan_nics(("e1000e",) * 5, "1")


def test_traffic_refuses_anything_outside_the_subnet():
    with pytest.raises(ValueError, match="outside"):
        traffic.send("192.0.2.1", flows=1, pps=1, duration_s=0.01)


def test_mq_guest_runs_qemu_in_the_namespace_with_four_cpus(tmp_path):
    spec = next(s for s in matrix.MATRIX if s.name == "bookworm-6.1-mq")
    kernel = BootableKernel(spec, "6.1.0-57-amd64", Path("/boot/vmlinuz-6.1.0-57-amd64"))
    network = guest_net.GuestNetwork(spec.nics, tag="9")  # not entered: nothing is created
    argv = vm.vng_command(Path("/v/bin"), kernel, Path("/repo"), tmp_path, "true", network)
    assert argv[:7] == ["nice", "-n", "10", "ip", "netns", "exec", "netprof-guest-9"]
    assert argv[argv.index("--cpus") + 1] == "4"
    # The `=` form: QEMU options start with "-" and would be read as vng's own otherwise.
    opts = next(a for a in argv if a.startswith("--qemu-opts="))
    assert opts.startswith(f"--qemu-opts={vm.TCG_ONE_THREAD} -netdev tap,id=n0,ifname=npt90,")
    guest = argv[-1]
    assert "NETPROF_GUEST_TIER=mq" in guest and "NETPROF_GUEST_NET=52:54:00:90:00:02=198.18.90.2/26=198.18.90.1" in guest


def test_plain_entries_have_no_network_and_no_tier(tmp_path):
    spec = next(s for s in matrix.MATRIX if s.name == "bookworm-6.1")
    kernel = BootableKernel(spec, "6.1.0-57-amd64", Path("/boot/vmlinuz"))
    argv = vm.vng_command(Path("/v/bin"), kernel, Path("/repo"), tmp_path, "true")
    # No NIC of their own: QEMU's options are only the TCG thread's.
    assert "netns" not in argv and [a for a in argv if a.startswith("--qemu-opts")] == [f"--qemu-opts={vm.TCG_ONE_THREAD}"]
    assert argv[argv.index("--cpus") + 1] == str(matrix.GUEST_CPUS)
    assert "NETPROF_GUEST_TIER" not in argv[-1]


def test_guest_tiers_are_collected_only_in_their_guest(monkeypatch):
    import importlib

    from tests.kernels import conftest

    try:
        monkeypatch.delenv("NETPROF_GUEST_TIER", raising=False)
        assert sorted(importlib.reload(conftest).collect_ignore) == ["mq", "nics", "vagrant"]
        monkeypatch.setenv("NETPROF_GUEST_TIER", "mq")
        assert importlib.reload(conftest).collect_ignore == ["nics", "vagrant"]
    finally:
        monkeypatch.undo()
        importlib.reload(conftest)
