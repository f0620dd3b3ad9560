"""The fake-pod lab against the real kernel: namespaces, bridge, sysctls, nft faults, workloads.

Needs root, iproute2 and nftables (skipped otherwise, failed under NETPROF_REQUIRE_BPF=1).
Every test names its lab with a fresh prefix and the `lab_prefix` fixture removes that lab
(and only that one: other labs may be running on the machine) even when the test fails.
Traffic only ever goes between namespaces these tests create.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from profiler.lab import LabError
from profiler.lab import topology
from profiler.lab.commands import add_lab_parser
from profiler.lab.faults import clear_faults, fault_counters, inject_loss
from profiler.lab.scenarios import RetransmitScenario
from profiler.lab.sysctl import (
    load_state,
    read_sysctl,
    recorded_sysctls,
    restore_sysctls,
    set_sysctl,
    state_path,
)
from profiler.lab.topology import Lab, down_all, list_lab_netns, new_prefix
from profiler.lab.traffic import client_argv, parse_output, server_argv

pytestmark = [pytest.mark.lab, pytest.mark.usefixtures("lab_ready")]

# Harmless to nudge by one for a moment, node-global, and restored by every path under test.
NODE_SYSCTL = "net.core.netdev_budget"


@pytest.fixture
def lab_prefix() -> Iterator[str]:
    prefix = new_prefix()
    try:
        yield prefix
    finally:
        down_all(prefix)
        assert list_lab_netns(prefix) == []


def _read_ready_line(proc: subprocess.Popen[str], timeout_s: float = 5.0) -> dict:
    """First JSON line a workload prints (its `listening`/`ready` record)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
        if ready:
            return json.loads(proc.stdout.readline())
    raise AssertionError(f"{proc.args} printed nothing within {timeout_s}s")


def _summary(stdout: str) -> dict:
    summaries = [r for r in parse_output(stdout) if r.get("event") == "summary"]
    assert summaries, f"no summary in {stdout!r}"
    return summaries[-1]


def _is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


# -- topology ---------------------------------------------------------------------------

def test_pods_reach_each_other_through_the_bridge(lab_prefix: str) -> None:
    with Lab.up(["client", "server"], prefix=lab_prefix) as lab:
        server_pod, client_pod = lab.pods["server"], lab.pods["client"]
        assert server_pod.netns == f"{lab_prefix}-server"
        assert {client_pod.ip, server_pod.ip} == {"198.18.0.2", "198.18.0.3"}

        server = lab.popen("server", server_argv(7001, duration_s=10),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert _read_ready_line(server)["event"] == "listening"
        connect = f"import socket; socket.create_connection(({server_pod.ip!r}, 7001), timeout=3).close()"
        lab.run("client", [sys.executable, "-c", connect])
        server.terminate()
        stdout, _ = server.communicate(timeout=5)
        assert _summary(stdout)["connections"] == 1

        # The inode netprof keys pods by is the one a process inside the pod sees.
        seen = lab.run("client", ["readlink", "/proc/self/ns/net"]).stdout.strip()
        assert seen == f"net:[{client_pod.netns_inode}]"
        assert client_pod.netns_inode != server_pod.netns_inode

        bridge_ports = lab.run("node", ["ip", "-o", "link", "show", "master", topology.BRIDGE_NAME]).stdout
        assert client_pod.host_veth in bridge_ports and server_pod.host_veth in bridge_ports


def test_no_namespace_has_a_route_out(lab_prefix: str) -> None:
    with Lab.up(["a", "b"], prefix=lab_prefix) as lab:
        for netns in [lab.node_netns, *(pod.netns for pod in lab.pods.values())]:
            assert topology.run_checked(["ip", "-n", netns, "route", "show", "default"]).stdout == ""
            routes = topology.run_checked(["ip", "-n", netns, "-4", "route", "show"]).stdout.splitlines()
            assert routes and all(line.startswith("198.18.0.0/24 ") for line in routes), routes
            # A route lookup only, nothing is sent: an outside address must be unreachable.
            lookup = subprocess.run(["ip", "-n", netns, "route", "get", "192.0.2.1"],
                                    capture_output=True, text=True)
            assert lookup.returncode != 0 and "unreachable" in lookup.stderr.lower()


def test_down_removes_every_netns_and_the_state_file(lab_prefix: str) -> None:
    lab = Lab.up(["a", "b"], prefix=lab_prefix)
    sleeper = lab.popen("a", ["sleep", "30"])
    set_sysctl(lab_prefix, "net.core.somaxconn", 77, netns=lab.pods["b"].netns)
    assert set(list_lab_netns(lab_prefix)) == {f"{lab_prefix}-a", f"{lab_prefix}-b", f"{lab_prefix}-node"}
    assert state_path(lab_prefix).exists()

    lab.down()

    assert list_lab_netns(lab_prefix) == []
    assert not state_path(lab_prefix).exists()
    assert sleeper.poll() is not None
    lab.down()  # idempotent


def test_exception_inside_with_still_cleans_up(lab_prefix: str) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with Lab.up(["a"], prefix=lab_prefix) as lab:
            # Started without the Lab's knowledge, so only `ip netns pids` can find it.
            stray = subprocess.Popen(lab.exec_argv("a", ["sleep", "30"]))
            raise RuntimeError("boom")
    assert list_lab_netns(lab_prefix) == []
    assert not state_path(lab_prefix).exists()
    assert stray.wait(timeout=2) is not None


def test_up_failing_halfway_removes_what_it_made(lab_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real_ip = topology._ip

    def ip_failing_on_second_veth(*args: str) -> None:
        if "v3-b" in args and "add" in args:
            # A command that fails harmlessly: a namespace that does not exist.
            topology.run_checked(["ip", "-n", f"{lab_prefix}-missing", "link", "show"])
        real_ip(*args)

    monkeypatch.setattr(topology, "_ip", ip_failing_on_second_veth)
    with pytest.raises(LabError) as failure:
        Lab.up(["a", "b", "c"], prefix=lab_prefix)
    message = str(failure.value)
    assert "lab up failed" in message and "\n" not in message
    assert list_lab_netns(lab_prefix) == []
    assert not state_path(lab_prefix).exists()


def test_bad_names_are_refused_before_anything_is_made() -> None:
    for pods in (["node"], ["a", "a"], ["Bad_Name"], []):
        with pytest.raises(LabError):
            Lab.up(pods)
    with pytest.raises(LabError, match="prefix"):
        Lab.up(["a"], prefix="../etc")


# -- sysctls ----------------------------------------------------------------------------

def test_sysctl_inside_a_netns_is_set_and_restored(lab_prefix: str) -> None:
    with Lab.up(["a"], prefix=lab_prefix) as lab:
        netns = lab.pods["a"].netns
        host_before = read_sysctl("net.core.somaxconn")
        original = read_sysctl("net.core.somaxconn", netns)
        set_sysctl(lab_prefix, "net.core.somaxconn", 17, netns=netns)
        set_sysctl(lab_prefix, "net.core.somaxconn", 18, netns=netns)  # first original is kept
        assert read_sysctl("net.core.somaxconn", netns) == "18"
        assert read_sysctl("net.core.somaxconn") == host_before  # per-netns: host untouched
        [change] = recorded_sysctls(lab_prefix)
        assert (change.original, change.value, change.netns) == (original, "18", netns)

        restored = restore_sysctls(lab_prefix)

        assert [c.key for c in restored] == ["net.core.somaxconn"]
        assert read_sysctl("net.core.somaxconn", netns) == original
        assert recorded_sysctls(lab_prefix) == []


CRASHING_OWNER = textwrap.dedent("""
    import os, subprocess, sys
    from profiler.lab.sysctl import set_sysctl
    from profiler.lab.topology import Lab
    prefix, key, value = sys.argv[1:4]
    lab = Lab.up(["a"], prefix=prefix)
    # No inherited pipes: the test waits for this process's output to end, not the sleeper's.
    sleeper = lab.popen("a", ["sleep", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    set_sysctl(prefix, key, value)
    set_sysctl(prefix, "net.core.somaxconn", "77", netns=lab.pods["a"].netns)
    print(sleeper.pid, flush=True)
    os.kill(os.getpid(), 9)
""")


def test_node_sysctl_is_restored_by_a_fresh_process_after_a_crash(lab_prefix: str) -> None:
    original = read_sysctl(NODE_SYSCTL)
    changed = str(int(original) + 1)
    try:
        owner = subprocess.run([sys.executable, "-c", CRASHING_OWNER, lab_prefix, NODE_SYSCTL, changed],
                               capture_output=True, text=True, timeout=30)
        assert owner.returncode == -signal.SIGKILL, owner.stderr
        sleeper_pid = int(owner.stdout.split()[0])
        assert read_sysctl(NODE_SYSCTL) == changed
        assert list_lab_netns(lab_prefix)
        assert _is_running(sleeper_pid)

        removed = down_all(lab_prefix)  # this process never knew the lab

        assert read_sysctl(NODE_SYSCTL) == original
        assert set(removed) >= {f"{lab_prefix}-a", f"{lab_prefix}-node", str(state_path(lab_prefix))}
        assert list_lab_netns(lab_prefix) == []
        assert not state_path(lab_prefix).exists()
        assert not _is_running(sleeper_pid)
    finally:
        if read_sysctl(NODE_SYSCTL) != original:  # never leave the node changed, whatever failed
            Path("/proc/sys", *NODE_SYSCTL.split(".")).write_text(original)


# -- faults -----------------------------------------------------------------------------

UDP_RECEIVER = textwrap.dedent("""
    import json, socket, sys
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", int(sys.argv[1])))
    print(json.dumps({"event": "ready"}), flush=True)
    sock.settimeout(1.0)
    count = 0
    try:
        while True:
            sock.recv(2048)
            count += 1
    except TimeoutError:
        pass
    print(json.dumps({"event": "summary", "received": count}), flush=True)
""")

UDP_SENDER = textwrap.dedent("""
    import socket, sys, time
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(int(sys.argv[3])):
        sock.sendto(b"x" * 100, (sys.argv[1], int(sys.argv[2])))
        time.sleep(0.0005)
""")


def _udp_exchange(lab: Lab, sender: str, receiver: str, port: int, count: int) -> int:
    proc = lab.popen(receiver, [sys.executable, "-c", UDP_RECEIVER, str(port)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _read_ready_line(proc)["event"] == "ready"
    lab.run(sender, [sys.executable, "-c", UDP_SENDER, lab.pods[receiver].ip, str(port), str(count)])
    stdout, stderr = proc.communicate(timeout=10)
    return int(_summary(stdout)["received"])


def test_inject_loss_drops_packets_from_that_pod_only(lab_prefix: str) -> None:
    sent = 400
    with Lab.up(["lossy", "peer"], prefix=lab_prefix) as lab:
        inject_loss(lab, "lossy", 50)

        received = _udp_exchange(lab, "lossy", "peer", 9000, sent)
        [counter] = fault_counters(lab)
        assert counter.comment == "loss lossy 50% all"
        # 50% of 400: far outside ±100 only with probability ~1e-23.
        assert 100 < counter.packets < 300
        assert received + counter.packets == sent

        assert _udp_exchange(lab, "peer", "lossy", 9001, sent) == sent  # the other direction is clean

        clear_faults(lab)
        assert fault_counters(lab) == []
        assert _udp_exchange(lab, "lossy", "peer", 9002, sent) == sent
        clear_faults(lab)  # idempotent


def test_inject_loss_rejects_bad_arguments(lab_prefix: str) -> None:
    with Lab.up(["a"], prefix=lab_prefix) as lab:
        for args in (("a", 101), ("a", -1), ("nope", 5)):
            with pytest.raises(LabError):
                inject_loss(lab, *args)
        with pytest.raises(LabError):
            inject_loss(lab, "a", 5, port=70000)


# -- traffic ----------------------------------------------------------------------------

def test_traffic_moves_bytes_and_exits_by_itself(lab_prefix: str) -> None:
    with Lab.up(["client", "server"], prefix=lab_prefix) as lab:
        started = time.monotonic()
        server = lab.popen("server", server_argv(7002, duration_s=2.5),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert _read_ready_line(server)["event"] == "listening"
        client = lab.popen("client", client_argv(lab.pods["server"].ip, 7002, rate=200, size=500, duration_s=1),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        client_out, client_err = client.communicate(timeout=10)
        server_out, server_err = server.communicate(timeout=10)
        elapsed = time.monotonic() - started

        assert client.returncode == 0, client_err
        assert server.returncode == 0, server_err
        sent, received = _summary(client_out), _summary(server_out)
        assert sent["connected"] and not sent["stopped_by_signal"] and not received["stopped_by_signal"]
        assert 150 <= sent["writes"] <= 201  # paced: ≈ rate × duration, never more
        assert sent["bytes"] == sent["writes"] * 500
        assert received["bytes"] == sent["bytes"] and received["connections"] == 1
        assert elapsed < 6


def test_traffic_stops_on_sigterm(lab_prefix: str) -> None:
    with Lab.up(["server"], prefix=lab_prefix) as lab:
        server = lab.popen("server", server_argv(7003, duration_s=60),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _read_ready_line(server)
        server.send_signal(signal.SIGTERM)
        stdout, _ = server.communicate(timeout=3)
        assert server.returncode == 0
        assert _summary(stdout)["stopped_by_signal"] is True


def test_client_without_server_gives_up_within_its_connect_timeout(lab_prefix: str) -> None:
    with Lab.up(["a", "b"], prefix=lab_prefix) as lab:
        argv = [*client_argv(lab.pods["b"].ip, 7004, rate=10, size=10, duration_s=1), "--connect-timeout", "0.5"]
        started = time.monotonic()
        result = lab.run("a", argv, check=False, timeout=10)
        assert result.returncode == 2
        assert _summary(result.stdout)["connected"] is False
        assert time.monotonic() - started < 5


# -- scenario and CLI -------------------------------------------------------------------

def test_retransmit_scenario_blames_the_lossy_pod(lab_prefix: str) -> None:
    with RetransmitScenario(prefix=lab_prefix) as scenario:
        assert scenario.lab is not None and set(scenario.lab.pods) == {"server", "lossy", "steady1", "steady2"}
        scenario.start(duration_s=2)
        result = scenario.wait()
        scenario.stop()  # idempotent after wait()
    assert list_lab_netns(lab_prefix) == []

    assert result.expected_pod == "lossy"
    retransmits = result.retransmits_by_pod
    [fault] = result.faults
    assert fault.packets > 20  # 5% of ~2000 segments
    assert retransmits["lossy"] >= fault.packets // 2
    # Paced senders over an unimpaired bridge do not retransmit (design §8: 0 at 0% loss);
    # a little slack for a loaded shared machine.
    assert max(retransmits["steady1"], retransmits["steady2"], retransmits["server"]) <= retransmits["lossy"] // 10
    by_role = {(w.pod, w.role): w for w in result.workloads}
    assert all(w.returncode == 0 for w in result.workloads), result.workloads
    # Each client waits for the server to have read all it wrote, lost segments included.
    assert all(by_role[(pod, "client")].summary["delivered"] for pod in ("lossy", "steady1", "steady2"))
    sent = sum(by_role[(pod, "client")].summary["bytes"] for pod in ("lossy", "steady1", "steady2"))
    assert by_role[("server", "server")].summary["bytes"] == sent


def test_cli_up_list_down(lab_prefix: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="netprof")
    add_lab_parser(parser.add_subparsers(dest="command"))

    def netprof(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return args.func(args)

    assert netprof("lab", "up", "--pods", "web,db", "--prefix", lab_prefix) == 0
    out = capsys.readouterr().out
    assert lab_prefix in out and f"{lab_prefix}-web" in out and "198.18.0.3" in out
    assert str(Lab.attach(lab_prefix).pods["db"].netns_inode) in out

    assert netprof("lab", "list", "--json") == 0
    [mine] = [lab for lab in json.loads(capsys.readouterr().out) if lab["prefix"] == lab_prefix]
    assert list(mine["pods"]) == ["web", "db"] and mine["owner_pid"] is None

    assert netprof("lab", "down", "--prefix", lab_prefix) == 0
    assert f"removed {lab_prefix}-web" in capsys.readouterr().out
    assert list_lab_netns(lab_prefix) == [] and load_state(lab_prefix) is None
    assert netprof("lab") == 2  # bare `lab` prints help instead of a traceback
