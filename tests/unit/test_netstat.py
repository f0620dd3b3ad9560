from profiler.system.netstat import parse_counter_pairs

NETSTAT = """\
TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops TCPReqQFullDrop
TcpExt: 0 0 1141 1141 3
IpExt: InNoRoutes InTruncatedPkts
IpExt: 0 0
"""


def test_parse_pairs():
    counters = parse_counter_pairs(NETSTAT)
    assert counters["TcpExt.ListenOverflows"] == 1141
    assert counters["TcpExt.TCPReqQFullDrop"] == 3
    assert counters["IpExt.InNoRoutes"] == 0


def test_malformed_pairs_are_skipped():
    assert parse_counter_pairs("TcpExt: A B\nIpExt: 1 2\nTcp: X\nTcp: 5\n") == {"Tcp.X": 5}


def test_only_the_wanted_counters_are_parsed():
    wanted = {"TcpExt.ListenOverflows", "TcpExt.TCPReqQFullDrop", "Udp.RcvbufErrors"}
    assert parse_counter_pairs(NETSTAT, wanted) == {"TcpExt.ListenOverflows": 1141, "TcpExt.TCPReqQFullDrop": 3}
    assert parse_counter_pairs(NETSTAT, set()) == {}
    # Every tracked counter reads the same either way.
    assert {k: v for k, v in parse_counter_pairs(NETSTAT).items() if k in wanted} == parse_counter_pairs(NETSTAT, wanted)
