"""python -m tests.kernels — boot each kernel of the matrix, run a command, collect results.

    python -m tests.kernels                         every kernel, the integration tests
    python -m tests.kernels -k bookworm-6.1         one kernel
    python -m tests.kernels -k bookworm-6.1 -c 'uname -r'
    python -m tests.kernels --docs docs/kernels.md  also regenerate the table from --out
    python -m tests.kernels --ci                    CI's short guest tier: each entry with a
                                                    ci_command (6.1's probe subset, the mq and
                                                    NIC guests' short selections)

Exit status 0 only when every selected kernel booted and its command exited 0.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from profiler.inert import inert

from . import provision, results, vm
from .matrix import MATRIX, PARALLEL_CPUS_MARK, parallel_cpus_phase, pytest_command, select

REPO = Path(__file__).resolve().parents[2]
DEFAULT_COMMAND = pytest_command("tests/integration")
DOCS_HEADER = (REPO / "tests/kernels/kernels_header.md")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.kernels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", "--kernel", action="append", metavar="NAME",
                        help=f"run only this kernel (repeatable): {', '.join(s.name for s in MATRIX)}")
    parser.add_argument("-c", "--command", metavar="SHELL",
                        help="run this in the guest instead of each kernel's default "
                             "(the integration tests with junit into $NETPROF_GUEST_OUT)")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "kernels",
                        help="results directory, one subdirectory per kernel (default build/kernels)")
    parser.add_argument("--time-limit", type=int, metavar="SECONDS",
                        help="override each kernel's time limit")
    parser.add_argument("--docs", type=Path, metavar="FILE",
                        help="render every result under --out into this Markdown file")
    parser.add_argument("--ci", action="store_true",
                        help="run each selected entry's CI command (matrix.py ci_command); without -k, "
                             "every entry that has one")
    parser.add_argument("--list", action="store_true", help="print the matrix and exit")
    return parser.parse_args(argv)


def command_for(spec, args: argparse.Namespace) -> str:
    """-c, else with --ci the entry's CI command, else its own command, else the integration tier."""
    return args.command or (spec.ci_command if args.ci else None) or spec.command or DEFAULT_COMMAND


# Where the second boot of a split run (matrix.parallel_cpus_phase) keeps its results.
PARALLEL_CPUS_DIR = "parallel-cpus"


def run_one(spec, args, vng_bin: Path) -> results.KernelResult:
    command = command_for(spec, args)
    out = args.out.resolve() / spec.name
    try:
        kernel = provision.provide(spec)
    except provision.ProvisionError as exc:
        result = results.KernelResult(spec.name, "", None, 0.0, False, command, None, not_run=str(exc))
        results.save(result, out)
        return result
    limit = args.time_limit or (args.ci and spec.ci_time_limit_s) or 0
    if limit:
        kernel = replace(kernel, spec=replace(spec, time_limit_s=limit))
    if not parallel_cpus_phase(spec, command, REPO):
        return _run_phase(vng_bin, kernel, out, command, None, "")
    first = _run_phase(vng_bin, kernel, out, command, f"not {PARALLEL_CPUS_MARK}", ", one TCG thread")
    if first.exit_status is None or first.timed_out:
        return first  # a guest that hung or never ran its command: no second boot to pay for
    second_kernel = replace(kernel, spec=replace(kernel.spec, one_tcg_thread=False, probe_table=False))
    second = _run_phase(vng_bin, second_kernel, out / PARALLEL_CPUS_DIR, command, PARALLEL_CPUS_MARK,
                        f", only the {PARALLEL_CPUS_MARK} tests, a TCG thread per vCPU")
    result = results.combine(first, second)
    results.save(result, out)
    return result


def _run_phase(vng_bin: Path, kernel, out: Path, command: str, pytest_mark: str | None, what: str) -> results.KernelResult:
    spec = kernel.spec
    for stale in ("junit.xml", "profile.json", "profile.err"):
        (out / stale).unlink(missing_ok=True)
    print(f"kernels: {spec.name} ({kernel.release}){what}: booting, limit {spec.time_limit_s} s",
          file=sys.stderr)
    run = vm.boot_and_run(vng_bin, kernel, REPO, out, command, pytest_mark)
    suite, probes, compiled_with = results.read_guest_outputs(out)
    result = results.KernelResult(spec.name, kernel.release, run.exit_status, round(run.wall_s, 1),
                                  run.timed_out, command, suite, compiled_with, probes,
                                  boot_hangs=run.boot_hangs)
    results.save(result, out)
    if not result.ok:
        # CI keeps only what is printed: where the guest was when it failed or was killed.
        print(f"kernels: {spec.name}: last lines of {out / 'console.log'}:", file=sys.stderr)
        for line in console_tail(out / "console.log"):
            print(f"  | {line}", file=sys.stderr)
    return result


CONSOLE_TAIL_LINES = 40


def console_tail(console: Path, lines: int = CONSOLE_TAIL_LINES) -> list[str]:
    """The console's last lines, inert (the guest's kernel and programs wrote them)."""
    try:
        text = console.read_text(errors="replace")
    except OSError as exc:
        return [f"(no console: {exc.strerror})"]
    return [inert(line, 400) for line in text.splitlines()[-lines:]]


def _exit_on_sigterm(signum, frame) -> None:
    # SystemExit unwinds through boot_and_run's `finally`, which kills QEMU's process group.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    import signal

    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    args = parse_args(argv)
    if args.list:
        for spec in MATRIX:
            print(f"{spec.name:28} {spec.source:6} {'ci ' if spec.ci_command else '   '}{spec.note}")
        return 0
    try:
        specs = select(args.kernel, ci=args.ci)
    except ValueError as exc:
        print(f"kernels: {exc}", file=sys.stderr)
        return 2
    try:
        provision.ensure_packages(provision.HOST_PACKAGES)
        if any(spec.tier == "mq" for spec in specs) and not args.ci:
            provision.ensure_packages(provision.MQ_PACKAGES, start_services=False)
        # The guest runs the suite on the host's root filesystem: the binaries its tests drive
        # (Prometheus, Chromium) are the host's, installed as `./bootstrap.sh test` would.
        provision.ensure_test_setup(REPO)
        vng_bin = provision.ensure_vng()
    except provision.ProvisionError as exc:
        print(f"kernels: {exc}", file=sys.stderr)
        return 1
    outcome = 0
    for spec in specs:
        result = run_one(spec, args, vng_bin)
        print(f"kernels: {spec.name}: {results._suite_cell(result)}"
              f" (exit {result.exit_status}, {result.wall_s:.0f} s)"
              + (f" — {result.not_run}" if result.not_run else ""), file=sys.stderr)
        if not result.ok:
            outcome = 1
    if args.docs:
        args.docs.write_text(results.render_markdown(results.load_all(args.out.resolve()),
                                                     DOCS_HEADER.read_text()))
    return outcome


if __name__ == "__main__":
    sys.exit(main())
