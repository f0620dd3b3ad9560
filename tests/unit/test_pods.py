import os
from pathlib import Path

from profiler.netns_names import HOST_LABEL, HostResolver, sanitize_label
from profiler.pod_listing import default_pod_directory
from profiler.pods import NamedNetnsResolver, PodDirectory


def make_tree(tmp_path: Path) -> Path:
    netns = tmp_path / "run/netns"
    netns.mkdir(parents=True)
    # In a fixture tree a plain file stands in for the nsfs bind mount: both have an inode.
    (netns / "web").write_text("")
    (netns / "db").write_text("")
    outside = tmp_path / "secret"
    outside.write_text("")
    os.symlink(outside, netns / "evil")
    proc = tmp_path / "proc/1/ns"
    proc.mkdir(parents=True)
    os.symlink("net:[4026531840]", proc / "net")
    return tmp_path


def test_named_host_and_unknown(tmp_path):
    root = make_tree(tmp_path)
    pods = default_pod_directory(root)
    web = os.stat(root / "run/netns/web").st_ino
    assert pods.label(web) == "web"
    assert pods.label(4026531840) == HOST_LABEL
    assert pods.label(123) == "netns:123"
    assert pods.label(0) == "unknown"


def test_symlinks_under_run_netns_are_not_followed(tmp_path):
    root = make_tree(tmp_path)
    secret = os.stat(root / "secret").st_ino
    assert NamedNetnsResolver(root).lookup(secret) is None
    assert "evil" not in NamedNetnsResolver(root).known().values()


def test_a_pod_that_vanishes_keeps_its_label(tmp_path):
    root = make_tree(tmp_path)
    pods = default_pod_directory(root)
    db = os.stat(root / "run/netns/db").st_ino
    assert pods.label(db) == "db"
    (root / "run/netns/db").unlink()
    assert pods.label(db) == "db"
    assert pods.known()[db] == "db"


def test_a_netns_named_later_gets_its_name(tmp_path):
    root = make_tree(tmp_path)
    pods = PodDirectory([NamedNetnsResolver(root, rescan_s=0)])
    (root / "run/netns/late").write_text("")
    late = os.stat(root / "run/netns/late").st_ino
    assert pods.label(late) == "late"


class FixedNames:
    def __init__(self, names: dict[int, str]):
        self.names = names

    def lookup(self, inode: int) -> str | None:
        return self.names.get(inode)

    def known(self) -> dict[int, str]:
        return dict(self.names)

    def paths(self) -> dict:
        return {}


def test_a_reused_netns_inode_gets_the_new_pods_name():
    named = FixedNames({10: "lab1-server"})
    pods = PodDirectory([FixedNames({}), named])
    assert pods.label(10) == "lab1-server"
    named.names[10] = "lab2-sender"   # the old netns is gone and the kernel reused its inode
    assert pods.label(10) == "lab2-sender"


def test_known_lists_quiet_pods(tmp_path):
    root = make_tree(tmp_path)
    known = default_pod_directory(root).known()
    assert sorted(known.values()) == ["db", HOST_LABEL, "web"]


def test_labels_are_sanitized():
    assert sanitize_label("ok-name") == "ok-name"
    assert sanitize_label("bad\x1b[31mname\n") == "bad?[31mname?"
    assert len(sanitize_label("x" * 10_000)) == 253


def test_host_falls_back_to_own_netns(tmp_path):
    (tmp_path / "proc/self/ns").mkdir(parents=True)
    os.symlink("net:[4026531999]", tmp_path / "proc/self/ns/net")
    assert HostResolver(tmp_path).lookup(4026531999) == HOST_LABEL


def test_netns_paths_for_entering_pods(tmp_path):
    root = make_tree(tmp_path)
    paths = default_pod_directory(root).netns_paths()
    web = os.stat(root / "run/netns/web").st_ino
    assert paths[web] == root / "run/netns/web"
    assert paths[4026531840] == root / "proc/1/ns/net"
    assert all("evil" not in str(p) for p in paths.values())
