"""`netprof pods`: every netns, its label and the source of the name, on a recorded node."""
from __future__ import annotations

import json
import re

from profiler.cli import main
import profiler.pod_listing
from profiler.pod_listing import default_pod_directory, netns_rows, render_rows
from tests.unit.test_k8s_trees import HOST_NETNS, consistent_copy, inode

WEB_NETNS = "run/netns/cni-3f9c1d2e-8a7b-4c5d-9e0f-1a2b3c4d5e6f"


def test_rows_name_each_netns_and_the_source_of_its_name(tmp_path):
    root = consistent_copy("containerd-1.7", tmp_path)
    (root / "run/netns/\x1b]52;c;evil\x07").touch()  # a hostile /run/netns name
    rows = {row.netns: row for row in netns_rows(default_pod_directory(root))}
    web = rows[inode(root / WEB_NETNS)]
    assert (web.pod, web.source, web.uid, web.containers) == (
        "default/web-7d4b9c8f6d-x8k2p", "containerd", "6b7f3c2e-1a4d-4e8b-9c2f-0d5e6a7b8c9d", ("log-shipper", "nginx"))
    assert web.path == str(root / WEB_NETNS)
    assert (rows[HOST_NETNS].pod, rows[HOST_NETNS].source) == ("host", "host")
    odd = rows[inode(root / "run/netns/\x1b]52;c;evil\x07")]
    assert odd.source == "run/netns"
    table = render_rows(list(rows.values()))
    assert "\x1b" not in table and "\\x1b]52" in table
    assert re.search(r"^\d+ +default/web-7d4b9c8f6d-x8k2p +containerd +6b7f3c2e-\S+ +log-shipper,nginx +/", table, re.M)


def test_the_pods_command_prints_json(tmp_path, capsys, monkeypatch):
    root = consistent_copy("containerd-1.7", tmp_path)
    on_the_fixture_node = default_pod_directory(root)
    monkeypatch.setattr(profiler.pod_listing, "default_pod_directory", lambda: on_the_fixture_node)
    assert main(["pods", "--json"]) == 0
    listed = {entry["pod"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert listed["kube-system/coredns-5dd5756b68-9kq4m"]["source"] == "containerd"
    assert listed["host"]["netns"] == HOST_NETNS
