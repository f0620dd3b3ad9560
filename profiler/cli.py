"""The `netprof` command line: argument parsing and turning failures into one-line errors."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from . import __version__
from .errors import NetprofError
from .inert import inert

DESCRIPTION = """\
eBPF network profiler for Kubernetes nodes: finds where the node's network hurts
(TCP retransmits, drops, listen overflows, conntrack, softirq) and which pod or CPU it hurts.
Runs as root; loads BPF programs with BCC, without kernel headers (BTF is enough)."""

EPILOG = """\
examples:
  netprof                                  the live dashboard (`netprof tui`): findings, pods, CPUs
  netprof tui --replay capture.json        the same dashboard over a saved capture (no kernel needed)
  netprof profile --duration 10            capture 10 s, print a report
  netprof profile --duration 5 --json      the same as one JSON document on stdout
  netprof profile --output DIR             also write capture.json, flame graph stacks, histograms
  netprof export capture.json --format folded   convert a saved capture (folded, speedscope, …)
  netprof serve                            Prometheus metrics on 127.0.0.1:9464 until stopped
  netprof fix                              a short capture, then the fixes for what it found (dry run)
  netprof fix --from capture.json --apply  apply the node-scope fixes of a saved capture
  netprof fix --rollback                   undo the last --apply
  netprof fix --apply --verify             apply, capture again, keep only the fixes that helped
  netprof diff before.json after.json      what changed between two captures, beyond noise
  netprof pods                             each network namespace and the pod it is named after
  netprof lab up                           bring up fake pods to try things on
  netprof lab run retransmits              a lossy pod among healthy ones
"""


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    if value > 86400:
        raise argparse.ArgumentTypeError("at most 86400 seconds (one day) per capture")
    return value


def _capture_mb(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of MiB: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of MiB, got {text!r}")
    return value


def _add_capture_limit(parser: argparse.ArgumentParser) -> None:
    from .capture_file import DEFAULT_MAX_CAPTURE_MB, MAX_CAPTURE_ENV

    parser.add_argument("--max-capture-mb", type=_capture_mb, default=None, metavar="MIB",
                        help=f"refuse a capture file larger than this (default {DEFAULT_MAX_CAPTURE_MB:g}, "
                             f"or {MAX_CAPTURE_ENV})")


TIER_HELP = (
    "which BPF programs run. full: all of them, the always-on counters plus the per-packet detail "
    "(softirq time and latency, NAPI polls, kernel stacks of drops and retransmits). quiet: the always-on "
    "counters only (drops by reason, retransmits, listen queues, softnet, SNMP/netstat, conntrack), nothing "
    "that runs on every packet or softirq. auto: quiet until an interval shows trouble (drops, retransmits, "
    "backlog drops or softnet squeezes per second at or above --tier-thresholds), then full until every one "
    "has stayed below half its threshold for the calm period; each switch is in the capture's `tier`, the "
    "dashboard header and netprof_detail_tier. Default: {default} ({why}); docs/cost.md#tiers")


def _add_tier_options(parser: argparse.ArgumentParser, default: str, why: str) -> None:
    from .detail_tier import MODES, TierThresholds

    t = TierThresholds()
    parser.add_argument("--tier", choices=MODES, default=default, help=TIER_HELP.format(default=default, why=why))
    parser.add_argument("--tier-thresholds", metavar="NAME=N,…", default=None,
                        help=f"with --tier auto: per-second thresholds and the calm rule, e.g. "
                             f"drops=100,retransmits=5,calm=120 (NAME: drops [{t.drops_per_s:g}], "
                             f"retransmits [{t.retransmits_per_s:g}], softnet_dropped [{t.softnet_dropped_per_s:g}], "
                             f"time_squeeze [{t.time_squeeze_per_s:g}], calm seconds [{t.calm_s:g}], "
                             f"calm_ratio [{t.calm_ratio:g}])")


def _tier_settings(args: argparse.Namespace):
    from .detail_tier import AUTO, TierSettings, parse_thresholds

    if args.tier_thresholds is None:
        return TierSettings(mode=args.tier)
    if args.tier != AUTO:
        raise NetprofError(f"--tier-thresholds tunes when --tier auto switches; with --tier {args.tier} nothing "
                           "switches (add --tier auto)")
    try:
        return TierSettings(mode=AUTO, thresholds=parse_thresholds(args.tier_thresholds))
    except ValueError as exc:
        raise NetprofError(f"--tier-thresholds: {exc}") from None


def _interval(text: str) -> float:
    value = _duration(text)
    if value < 0.05:
        raise argparse.ArgumentTypeError("the interval must be at least 0.05 s")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other netprof error
        self.exit(2, f"netprof: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="netprof", description=DESCRIPTION, epilog=EPILOG,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"netprof {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    profile = sub.add_parser(
        "profile",
        help="one-shot capture: attach probes, sample, report",
        description="Attach the probes, sample every --interval for --duration seconds, detach, "
                    "and print a report (or --json). Ctrl-C ends early and still reports.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    profile.add_argument("--duration", "-d", type=_duration, default=10.0, metavar="SECONDS",
                         help="how long to capture (default 10)")
    profile.add_argument("--interval", "-i", type=_interval, default=1.0, metavar="SECONDS",
                         help="how often the kernel counters are read (default 1)")
    profile.add_argument("--format", "-f", choices=("report", "json", "tsv"), default=None,
                         help="report (default: tables for people; no wrapping when piped), json (one "
                              "netprof.profile/v1 document, the complete contract) or tsv (the report's "
                              "tables, tab-separated, for scripts)")
    profile.add_argument("--json", action="store_true", help="the same as --format json")
    profile.add_argument("--output", "-o", type=Path, metavar="DIR",
                         help="also write capture.json, stacks.folded, speedscope.json, flamegraph.svg, histograms.json, "
                              "histograms.csv and metrics.prom into DIR (each atomically)")
    _add_tier_options(profile, "full", "a capture someone asked for wants every figure, and it ends")
    profile.set_defaults(func=_cmd_profile)

    from .exports import EXPORT_FORMATS

    export = sub.add_parser(
        "export",
        help="convert a saved capture: folded stacks, speedscope, histograms, Prometheus text",
        description="Convert a capture (capture.json from `netprof profile --output`, or `--json` output) "
                    "into one export format, on stdout or into --output FILE (written atomically). "
                    "See docs/exports.md for each format and how to view it.",
    )
    export.add_argument("capture", type=Path, metavar="CAPTURE.json")
    export.add_argument("--format", "-f", required=True, choices=EXPORT_FORMATS,
                        help="folded (flamegraph.pl/inferno input), speedscope (speedscope.app), "
                             "flamegraph-svg (an interactive SVG, any browser), histograms-json, "
                             "histograms-csv, prometheus (text exposition); docs/exports.md has each")
    export.add_argument("--output", "-o", type=Path, metavar="FILE", help="write here instead of stdout")
    _add_capture_limit(export)
    export.set_defaults(func=_cmd_export)

    from .serve import DEFAULT_INTERVAL_S, DEFAULT_LISTEN

    serve = sub.add_parser(
        "serve",
        help="live counters and histograms for Prometheus (HTTP and/or node_exporter textfile)",
        description="Attach the probes and keep sampling until SIGINT/SIGTERM; expose the totals since start "
                    "(counters, histograms; pods as namespace/pod/netns labels, CPUs as cpu) in Prometheus format.",
    )
    serve.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                       help=f"where to serve /metrics (default {DEFAULT_LISTEN}; [::1]:PORT for IPv6; port 0 picks one)")
    serve.add_argument("--no-listen", action="store_true", help="no HTTP endpoint (with --textfile)")
    serve.add_argument("--textfile", type=Path, metavar="PATH",
                       help="also write the metrics to PATH (*.prom) every interval, for node_exporter's "
                            "textfile collector; removed on exit")
    serve.add_argument("--interval", "-i", type=_interval, default=DEFAULT_INTERVAL_S, metavar="SECONDS",
                       help=f"how often the kernel counters are read (default {DEFAULT_INTERVAL_S:g})")
    serve.add_argument("--no-per-cpu", action="store_true",
                       help="sum the per-CPU series over the node's CPUs (no cpu label): a fixed number of "
                            "series per node, whatever its CPU count (see docs/exports.md for the cardinality)")
    _add_tier_options(serve, "auto", "serve stays on for days: a node without trouble pays only for the "
                                     "always-on counters, and the detail is there when something happens")
    serve.set_defaults(func=_cmd_serve)

    fix = sub.add_parser(
        "fix",
        help="the fixes for what a capture found: dry run, --apply, --rollback",
        description="Show the fixes for this node's findings (from a short capture, or --from a saved "
                    "one) as a dry run: every change, the value it expects to find, and why. --apply makes "
                    "the node-scope changes (sysctls, also inside a pod's netns; IRQ affinity; RPS/XPS "
                    "masks) after journaling the old values, and refuses if the node rebooted or any "
                    "value changed since the capture. --rollback restores the journaled values. "
                    "Pod- and app-scope fixes (pod spec YAML, listen() backlogs) are printed, never applied.",
    )
    fix.add_argument("--from", dest="from_file", metavar="CAPTURE.json",
                     help="plan from a saved capture (`netprof profile --json > capture.json`)")
    fix.add_argument("--duration", "-d", type=_duration, default=10.0, metavar="SECONDS",
                     help="without --from: how long to capture first (default 10)")
    action = fix.add_mutually_exclusive_group()
    action.add_argument("--apply", action="store_true", help="make the node-scope changes")
    action.add_argument("--rollback", action="store_true", help="restore what the last --apply changed")
    fix.add_argument("--verify", action="store_true",
                     help="with --apply: capture again for --window seconds after the changes, then once "
                          "more with them undone; keep each finding's fixes only if the figure it is about "
                          "improved beyond noise (the test `netprof diff` uses) and came back when undone; "
                          "verdicts go into the journal")
    fix.add_argument("--window", type=_duration, default=None, metavar="SECONDS",
                     help="with --verify: how long each capture after the changes takes (default: as "
                          "long as the capture before them)")
    fix.add_argument("--only", metavar="KIND,…", help="only these finding kinds (e.g. listen-overflow)")
    fix.add_argument("--output", "-o", "--out", dest="out", type=Path, metavar="DIR",
                     help="also write each fix's YAML / code / script snippet into DIR (--out: the old name)")
    fix.add_argument("--journal-dir", type=Path, default=Path("/var/lib/netprof"), metavar="DIR",
                     help="where --apply journals old values for --rollback (default /var/lib/netprof)")
    _add_capture_limit(fix)
    fix.set_defaults(func=_cmd_fix)

    tui = sub.add_parser(
        "tui",
        help="the live dashboard (what bare `netprof` runs): findings, pods, CPUs, fixes",
        description="A live view of this node, refreshed every --interval: findings ranked by severity (Enter "
                    "opens their evidence and fixes), pods (retransmits, drops, listen overflows, conntrack "
                    "failures per second; sortable, filterable) and CPUs (network softirq share, NAPI squeeze, "
                    "NIC IRQs). Findings cover the last --window seconds. `e` exports the capture, `?` lists "
                    "the keys, `q` quits. --replay opens a saved capture in the same view, without the kernel.",
    )
    tui.add_argument("--replay", type=Path, metavar="CAPTURE.json",
                     help="show a saved capture (`netprof profile --json`, or an export's capture.json)")
    tui.add_argument("--interval", "-i", type=_interval, default=1.0, metavar="SECONDS",
                     help="how often the kernel counters are read (default 1)")
    tui.add_argument("--window", "-w", type=_duration, default=60.0, metavar="SECONDS",
                     help="how much history the findings and details cover (default 60)")
    _add_tier_options(tui, "full", "someone is watching: every figure, now")
    tui.add_argument("--export-dir", type=Path, default=None, metavar="DIR",
                     help="where `e` writes its netprof-<host>-<time>/ directories (default: "
                          "$XDG_DATA_HOME/netprof/exports, else ~/.local/share/netprof/exports)")
    _add_capture_limit(tui)
    tui.set_defaults(func=_cmd_tui)

    diff = sub.add_parser(
        "diff",
        help="what changed between two captures (per second, beyond noise)",
        description="Compare two captures (`netprof profile --json`) as rates: per pod, CPU, drop reason and "
                    "site, listener; findings that appeared, were resolved, got worse or better. A change in an "
                    "event count is beyond noise when the exact conditional Poisson test of the two rates "
                    "rejects at p < 0.001 and the rate moved by at least x1.5; softirq time by a threshold on "
                    "the share of a CPU. Exit 0, or with --fail-on, 1 when that happened (for CI gates).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    diff.add_argument("before", type=Path, metavar="BEFORE.json")
    diff.add_argument("after", type=Path, metavar="AFTER.json")
    diff.add_argument("--json", action="store_true", help="print one JSON document (netprof.diff/v1)")
    diff.add_argument("--fail-on", choices=("worse", "change"), default=None,
                      help="exit 1 if anything got worse (a finding appeared or worsened, a trouble figure "
                           "rose beyond noise), or if anything changed at all")
    _add_capture_limit(diff)
    diff.set_defaults(func=_cmd_diff)

    pods = sub.add_parser(
        "pods",
        help="list this node's network namespaces and the pod netprof names each after",
        description="Every network namespace netprof can see, the name a capture would give it and where "
                    "that name comes from: the container runtime's record (containerd, cri-o), a kubepods "
                    "cgroup (cgroup+pod-logs, cgroup+kubelet-pods, cgroup), the node itself (host), a "
                    "/run/netns name, or none (netns:<inode>). Nothing is captured; no BPF is loaded. "
                    "NETPROF_NODE_ROOT=/host reads the runtime's state under /host (kubectl debug node/...).",
    )
    pods.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pods.set_defaults(func=_cmd_pods)

    from .lab.commands import add_lab_parser, positive_seconds

    # The demo composes the lab (a scenario, the profiler, the report), so its command is
    # added here, above both: the lab knows nothing of the demo.
    lab_commands = add_lab_parser(sub)
    demo = lab_commands.add_parser(
        "demo", help="the README demo: a lossy pod among healthy ones, found by the profiler",
        description="Bring up fake pods, make one pod's path lossy, run `netprof profile` on "
                    "the real kernel while they talk, print the report and a verdict, and "
                    "remove the lab (also on Ctrl-C). Exit 0 when the lossy pod is the one "
                    "netprof blames.")
    demo.add_argument("--duration", type=positive_seconds, default=5.0, metavar="S",
                      help="seconds of traffic (default 5)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def _cmd_demo(args: argparse.Namespace) -> int:
    from .lab.commands import require_root

    require_root()
    from .demo import run_demo

    return run_demo(args.duration)


def _cmd_profile(args: argparse.Namespace) -> int:
    from .capture_output import check_output_dir, check_stdout, save_fallback, silence_stdout
    from .profile import ProfileOptions, run_profile
    from .report import print_report

    from .progress import ProgressLine
    from .report import render_tsv

    if args.json and args.format not in (None, "json"):
        raise NetprofError(f"--json and --format {args.format} ask for two outputs: pick one")
    output_format = "json" if args.json else (args.format or "report")
    # Before the probes attach: an output error found at the end would cost the whole capture.
    check_stdout()
    if args.output is not None:
        check_output_dir(args.output)
    tier = _tier_settings(args)
    progress = ProgressLine(args.duration)
    try:
        capture = run_profile(ProfileOptions(duration_s=args.duration, interval_s=args.interval, tier=tier),
                              on_snapshot=progress.snapshot, on_started=progress.started)
    finally:
        progress.close()
    document = capture.to_json()
    failures: list[str] = []
    try:
        if output_format == "json":
            json.dump(document, sys.stdout, indent=2)
            sys.stdout.write("\n")
        elif output_format == "tsv":
            sys.stdout.write(render_tsv(document))
        else:
            print_report(document)
        sys.stdout.flush()
    except OSError as exc:  # EPIPE (the reader went away), ENOSPC (/dev/full, a full disk)
        silence_stdout()
        failures.append(f"cannot write to stdout: {exc.strerror or exc}")
    if args.output is not None:
        try:
            _write_exports(document, args.output,
                           sys.stderr if output_format != "report" or failures else sys.stdout)
        except NetprofError as exc:
            failures.append(str(exc))
    if failures:
        try:
            saved = save_fallback(document)
        except OSError as exc:
            raise NetprofError(f"{'; '.join(failures)}; saving the capture elsewhere failed too "
                               f"({exc.strerror or exc}): it is lost") from None
        raise NetprofError(f"{'; '.join(failures)}; the capture is saved in {saved} "
                           f"(netprof export / tui --replay read it)")
    return 130 if capture.interrupted else 0


def _write_exports(document: dict, out_dir: Path, stream) -> None:
    from .capture_output import silence_stdout
    from .exports import write_all

    try:
        written = write_all(document, out_dir)
    except OSError as exc:
        raise NetprofError(f"cannot write the exports into {out_dir}: {exc.strerror or exc}") from None
    try:
        for path in written:
            print(f"wrote {path}", file=stream, flush=True)
    except OSError:
        if stream is sys.stdout:
            silence_stdout()  # the files are written; only the note about them is lost


def _cmd_export(args: argparse.Namespace) -> int:
    from .capture_file import load_capture
    from .exports import atomic_write_text, render

    if args.output is not None and not args.output.parent.is_dir():
        # A typo in a folder name must not quietly make new folders as root.
        raise NetprofError(f"cannot write {args.output}: no folder {args.output.parent} (create it first)")
    text = render(load_capture(args.capture, args.max_capture_mb), args.format)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        atomic_write_text(args.output, text)
    except OSError as exc:
        raise NetprofError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from .serve import ServeOptions, parse_listen, run_serve

    if args.no_listen and args.textfile is None:
        raise NetprofError("--no-listen without --textfile would expose nothing")
    options = ServeOptions(listen=None if args.no_listen else parse_listen(args.listen),
                           textfile=args.textfile, interval_s=args.interval, per_cpu=not args.no_per_cpu,
                           tier=_tier_settings(args))
    return run_serve(options, log=lambda msg: print(msg, file=sys.stderr, flush=True))


def _cmd_fix(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .capture_file import load_capture
    from .fix.command import replan, run_fix

    if args.rollback and args.from_file:
        raise NetprofError("--rollback undoes the last --apply; it takes no --from")
    if (args.verify or args.window is not None) and not args.apply:
        raise NetprofError("--verify (and --window) judge an --apply: add --apply")
    if args.window is not None and not args.verify:
        raise NetprofError("--window is the capture --verify takes after the changes: add --verify")
    only = {kind.strip() for kind in args.only.split(",") if kind.strip()} if args.only else None
    if args.rollback:
        return run_fix(capture=None, apply=False, do_rollback=True, journal_dir=args.journal_dir,
                       out_dir=args.out, only=only, console=Console())
    from .profile import ProfileSession

    # One attach for every capture this run takes (the plan's, and --verify's one or two
    # after the changes): BCC compiles netprof's programs once. Started only when a capture
    # is needed: `--from` without --verify never attaches anything.
    with ProfileSession() as session:
        findings = None
        if args.from_file:
            capture = load_capture(Path(args.from_file), args.max_capture_mb)
            findings = replan(capture)  # never the findings stored in the file
        else:
            capture = session.capture(args.duration).to_json()
        verify_with = None
        if args.verify:
            # The same window as before the changes, so the two rates are comparable.
            window_s = args.window or float(capture.get("duration_s") or args.duration)

            def capture_after() -> dict:
                return session.capture(window_s).to_json()

            verify_with = capture_after
        return run_fix(capture=capture, apply=args.apply, do_rollback=False, journal_dir=args.journal_dir,
                       out_dir=args.out, only=only, console=Console(), findings=findings, verify_with=verify_with)


def _cmd_diff(args: argparse.Namespace) -> int:
    from rich.console import Console

    from .analysis.diff import diff_captures
    from .diff_view import render_diff
    from .capture_file import load_capture

    result = diff_captures(load_capture(args.before, args.max_capture_mb),
                           load_capture(args.after, args.max_capture_mb))
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        Console().print(render_diff(result, args.before.name, args.after.name))
    if args.fail_on == "worse" and result.worse:
        return 1
    if args.fail_on == "change" and result.changed:
        return 1
    return 0


def _cmd_pods(args: argparse.Namespace) -> int:
    from .pod_listing import default_pod_directory, netns_rows, render_rows

    rows = netns_rows(default_pod_directory())
    if args.json:
        json.dump([row.to_json() for row in rows], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render_rows(rows))
    return 0


def _cmd_tui(args: argparse.Namespace) -> int:
    from tui.run import run_tui

    tier = _tier_settings(args)
    if args.replay is not None and (args.tier != "full" or args.tier_thresholds is not None):
        raise NetprofError("--tier chooses what a live dashboard runs; a --replay shows the tier its capture had")
    return run_tui(replay=args.replay, interval_s=args.interval, window_s=args.window, export_dir=args.export_dir,
                   max_capture_mb=args.max_capture_mb, tier=tier)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None and sys.stdin.isatty() and sys.stdout.isatty() and sys.stderr.isatty():
        # Bare `netprof` at a terminal is the dashboard, what an operator runs first;
        # without a terminal (a script, a pipe) it still prints the help.
        args = parser.parse_args(["tui"])
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except NetprofError as exc:
        # Messages quote paths, names and values from outside: one line, inert.
        print(f"netprof: {inert(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("netprof: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug: still one line for the operator, details on request
        if os.environ.get("NETPROF_DEBUG"):
            raise
        print(f"netprof: internal error: {type(exc).__name__}: {inert(exc)} "
              "(rerun with NETPROF_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
