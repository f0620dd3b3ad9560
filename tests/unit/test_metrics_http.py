"""The /metrics endpoint stays up and bounded whatever its clients do (issue 12, item 6).
Loopback only; every loop is bounded by a deadline, every socket closed by the test."""
from __future__ import annotations

import gzip
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
from prometheus_client import CollectorRegistry, Counter

from profiler.metrics_http import EVICT_AFTER_S
from profiler.serve import start_metrics_server
from tests.serve_clients import burst


@contextmanager
def serving(**limits) -> Iterator[tuple[int, object]]:
    registry = CollectorRegistry()
    Counter("netprof_test_scrapes", "a counter for the test", registry=registry).inc(3)
    server = start_metrics_server("127.0.0.1", 0, registry, **limits)
    try:
        yield server.server_address[1], server
    finally:
        server.shutdown()
        server.server_close()


def scrape(port: int, timeout_s: float = 2.0) -> tuple[float, str]:
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as response:
        assert response.status == 200
        body = response.read().decode()
    return time.monotonic() - started, body


def _half_open_clients(stack: ExitStack, port: int, count: int) -> list[socket.socket]:
    """Clients that connect, send part of a request, and never finish it (slowloris)."""
    clients = []
    for _ in range(count):
        client = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
        client.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        clients.append(client)
    return clients


def test_a_scrape_gets_the_registry_like_prometheus_client_serves_it():
    with serving() as (port, _server):
        _, body = scrape(port)
        assert "netprof_test_scrapes_total 3.0" in body
        request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={
            "Accept": "application/openmetrics-text; version=1.0.0", "Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=2) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert response.headers["Content-Type"].startswith("application/openmetrics-text")
            assert gzip.decompress(response.read()).decode().endswith("# EOF\n")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics?name[]=nothing_here", timeout=2) as response:
            assert "netprof_test_scrapes" not in response.read().decode()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x"), timeout=2)
        assert refused.value.code == 405


def test_a_slow_client_flood_neither_holds_threads_nor_slows_a_scrape():
    with serving() as (port, _server), ExitStack() as stack:
        threads_before = threading.active_count()
        _half_open_clients(stack, port, 200)
        time.sleep(0.3)  # let the server take them all in
        elapsed, body = scrape(port)
        assert "netprof_test_scrapes_total" in body
        assert elapsed < 1.0, f"a scrape took {elapsed:.2f}s behind 200 slow clients"
        assert threading.active_count() <= threads_before, "a thread per slow client"


def test_a_client_that_never_finishes_its_headers_is_cut_off():
    with serving(header_timeout_s=0.5) as (port, server), ExitStack() as stack:
        (client,) = _half_open_clients(stack, port, 1)
        client.settimeout(5)
        started = time.monotonic()
        assert client.recv(1) == b"", "the server should close the connection"
        assert time.monotonic() - started < 3
        assert server.connections_timed_out == 1


def test_when_connections_run_out_the_slowest_client_makes_room():
    with serving(max_connections=20) as (port, server), ExitStack() as stack:
        _half_open_clients(stack, port, 20)
        time.sleep(EVICT_AFTER_S + 0.3)  # slow by now, not merely a burst
        elapsed, _ = scrape(port)
        assert elapsed < 1.0
        assert server.connections_evicted >= 1 and server.open_connections <= 20


def test_a_burst_of_1000_connections_is_answered_in_full():
    """All connect at once (the listen backlog holds them), then all ask and all get 200."""
    count = 1000
    with serving() as (port, _server):
        answered = burst(port, count, timeout_s=20)
    assert answered == count, f"{count - answered} of {count} not answered within 20 s"


def test_a_collector_that_fails_costs_one_scrape_not_the_endpoint():
    class FailsOnce:
        calls = 0

        def collect(self):
            FailsOnce.calls += 1
            if FailsOnce.calls == 1:
                raise RuntimeError("a collector bug")
            return iter(())

    logged: list[str] = []
    with serving(log=logged.append) as (port, server):
        server.registry.register(FailsOnce())
        with pytest.raises(urllib.error.HTTPError) as failed:
            scrape(port)
        assert failed.value.code == 500
        assert "netprof_test_scrapes_total" in scrape(port)[1]
        assert logged == ["rendering /metrics failed: RuntimeError: a collector bug"]


def test_a_burst_of_scrapes_shares_one_rendering_for_half_a_second():
    """Rendering happens once per RENDER_REUSE_S, not once per client: a burst of scrapes
    cannot make the one I/O thread render hundreds of families a thousand times."""
    from prometheus_client.registry import Collector

    from profiler.metrics_http import RENDER_REUSE_S

    class Counting(Collector):
        renders = 0

        def collect(self):
            Counting.renders += 1
            from prometheus_client.core import CounterMetricFamily
            family = CounterMetricFamily("netprof_renders", "how often the registry was rendered")
            family.add_metric([], Counting.renders)
            yield family

    now = [100.0]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Counting())
    server = start_metrics_server("127.0.0.1", 0, registry, clock=lambda: now[0])
    try:
        port = server.server_address[1]
        bodies = [scrape(port)[1] for _ in range(5)]
        assert Counting.renders == 1 and len(set(bodies)) == 1
        now[0] += RENDER_REUSE_S + 0.01
        assert "netprof_renders_total 2.0" in scrape(port)[1] and Counting.renders == 2
    finally:
        server.shutdown()
        server.server_close()
