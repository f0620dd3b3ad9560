"""One capture, three views: the report, the dashboard and the Prometheus exposition show the
same listen-overflow count and the same softirq p99 (issue 13). They used to disagree: the
report and the dashboard took the netstat counter and fell back to the overflow drops only
when it was 0, and the dashboard's CPU view showed a log2 bucket's upper bound for p99."""
from __future__ import annotations

import copy
import io
import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from profiler.report import microseconds, render_tsv
from profiler.exports.prometheus import exposition_text
from tests.export_readers import read_prometheus
from tui.model import build_model, format_ns
from tui.screens.cpu import render_cpu
from tui.screens.pod import render_pod

BUSY = Path(__file__).resolve().parents[1] / "tui" / "fixtures" / "busy.json"
SERVER = "nplab58ede0-server"
NETSTAT_OVERFLOWS = 32   # the recorded TcpExt.ListenOverflows of SERVER
DROP_OVERFLOWS = 45      # its listener's TCP_LISTEN_OVERFLOW drops, made to differ
CPU = 0


@pytest.fixture(scope="module")
def capture() -> dict:
    """The recorded busy capture, with the server's overflow drops above its netstat counter
    (its netns counter missed the last increments): the two sources disagree, and the larger
    is the count every view must show."""
    doc = copy.deepcopy(json.loads(BUSY.read_text()))
    server = next(pod for pod in doc["pods"] if pod["pod"] == SERVER)
    assert server["netstat"]["TcpExt.ListenOverflows"] == NETSTAT_OVERFLOWS
    [listener] = server["listen"]
    listener["overflow_drops"] = DROP_OVERFLOWS
    latency = next(cpu for cpu in doc["cpus"] if cpu["cpu"] == CPU)["softirq"]["NET_RX"]["latency_log2_ns"]
    assert sum(latency) > 1000   # a real histogram, p99 inside a finite bucket
    return doc


def _tsv_table(tsv: str, title: str) -> list[dict[str, str]]:
    lines = tsv.split(f"# {title}\n", 1)[1].split("\n\n", 1)[0].splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def _text(renderables) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    for renderable in renderables:
        console.print(renderable)
    return console.export_text()


def _histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile() over cumulative (le, count) buckets, as
    promql/quantile.go computes it: linear inside the bucket, the lower bound of the first
    bucket 0, the last finite le for a rank in +Inf."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    rank = q * total
    for index, (le, count) in enumerate(buckets):
        if count >= rank:
            if math.isinf(le):
                return buckets[index - 1][0]
            lower, below = (0.0, 0.0) if index == 0 else buckets[index - 1]
            return lower + (le - lower) * (rank - below) / (count - below)
    raise AssertionError("no bucket holds the rank")


def test_report_tui_and_prometheus_show_the_same_listen_overflows(capture):
    expected = max(NETSTAT_OVERFLOWS, DROP_OVERFLOWS)

    pods = {row["pod"]: row for row in _tsv_table(render_tsv(capture), "Pods")}
    assert pods[SERVER]["listen ovf"] == str(expected)

    model = build_model(capture)
    row = next(pod for pod in model.pods if pod.name == SERVER)
    assert row.rates.listen_overflows_per_s * model.rate_window_s == pytest.approx(expected)
    assert f"ListenOverflows in this pod's netns: {expected}" in _text(render_pod(model, row.netns))

    families = read_prometheus(exposition_text(capture))
    [sample] = [s for s in families["netprof_listen_overflows"]
                if s.name == "netprof_listen_overflows_total" and s.labels["pod"] == SERVER]
    assert sample.value == expected


def test_report_tui_and_prometheus_show_the_same_p99(capture):
    model = build_model(capture)
    p99_ns = model.cpu(CPU).net_rx_p99_ns
    assert p99_ns is not None

    cpus = {row["cpu"]: row for row in _tsv_table(render_tsv(capture), "CPUs")}
    report_p99 = cpus[str(CPU)]["NET_RX µs p50/90/99"].split("/")[2]
    assert report_p99 == microseconds(p99_ns)

    assert f"p99 {format_ns(p99_ns)}" in _text(render_cpu(model, CPU))

    families = read_prometheus(exposition_text(capture))
    buckets = [(float(s.labels["le"]), s.value) for s in families["netprof_softirq_latency_seconds"]
               if s.name == "netprof_softirq_latency_seconds_bucket"
               and s.labels["cpu"] == str(CPU) and s.labels["vector"] == "NET_RX"]
    assert _histogram_quantile(0.99, buckets) * 1e9 == pytest.approx(p99_ns, rel=1e-9)
    # Not a bucket's bound: the p99 lies inside its bucket (what the dashboard used to show).
    assert math.log2(p99_ns) % 1 != 0
