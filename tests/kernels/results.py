"""What a guest run brought back, summed up; and docs/kernels.md rendered from those results."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

RESULT_FILE = "result.json"


@dataclass(frozen=True)
class SuiteCounts:
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    failed_tests: tuple[str, ...] = ()


@dataclass(frozen=True)
class ProbeRow:
    name: str
    attached: bool
    via: str
    error: str | None


@dataclass
class KernelResult:
    kernel: str
    release: str
    exit_status: int | None
    wall_s: float
    timed_out: bool
    command: str
    suite: SuiteCounts | None
    compiled_with: str | None = None
    probes: list[ProbeRow] = field(default_factory=list)
    not_run: str | None = None  # why this kernel could not be booted at all
    boot_hangs: int = 0         # boots that never reached the command (vm.BOOT_LIMIT_S)
    # A split run (matrix.parallel_cpus_phase): the second boot's own counts, already in `suite`.
    parallel_cpus: SuiteCounts | None = None

    @property
    def ok(self) -> bool:
        return self.not_run is None and self.exit_status == 0 and not self.timed_out

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "KernelResult":
        return cls(**{**data, "suite": _counts(data.get("suite")),
                      "parallel_cpus": _counts(data.get("parallel_cpus")),
                      "probes": [ProbeRow(**row) for row in data.get("probes", [])]})


def _counts(data: dict | None) -> SuiteCounts | None:
    return SuiteCounts(**{**data, "failed_tests": tuple(data["failed_tests"])}) if data else None


def combine(first: KernelResult, second: KernelResult) -> KernelResult:
    """One kernel's result from its two boots: the suite without the parallel_cpus tests on
    one TCG thread, then those tests on a thread per vCPU. The probe table and the loader
    path are the first boot's (the second records none)."""
    suites = [s for s in (first.suite, second.suite) if s is not None]
    suite = SuiteCounts(*(sum(getattr(s, name) for s in suites) for name in ("passed", "failed", "errors", "skipped")),
                        tuple(t for s in suites for t in s.failed_tests)) if suites else None
    exit_status = next((r.exit_status for r in (first, second) if r.exit_status != 0), 0)
    return replace(first, exit_status=exit_status, wall_s=round(first.wall_s + second.wall_s, 1),
                   timed_out=first.timed_out or second.timed_out, suite=suite,
                   boot_hangs=first.boot_hangs + second.boot_hangs,
                   parallel_cpus=second.suite or SuiteCounts())


def parse_junit(text: str) -> SuiteCounts:
    """Counts from pytest's junit XML (one or more <testsuite>)."""
    root = ET.fromstring(text)
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    passed = failed = errors = skipped = 0
    failed_tests = []
    for suite in suites:
        for case in suite.iter("testcase"):
            outcome = {child.tag for child in case}
            name = f"{case.get('classname', '')}::{case.get('name', '')}"
            if "failure" in outcome:
                failed += 1
                failed_tests.append(name)
            elif "error" in outcome:
                errors += 1
                failed_tests.append(name)
            elif "skipped" in outcome:
                skipped += 1
            else:
                passed += 1
    return SuiteCounts(passed, failed, errors, skipped, tuple(failed_tests))


def parse_probe_table(profile_json: str) -> list[ProbeRow]:
    data = json.loads(profile_json)
    return [ProbeRow(row["name"], bool(row["attached"]), row["via"], row.get("error"))
            for row in data.get("probes", [])]


def parse_compiled_with(profile_stderr: str) -> str | None:
    """The loader path `netprof profile` announced: btf+shim or kernel-headers (…)."""
    match = re.search(r"capturing for \S+ \(([^)]*(?:\([^)]*\))?[^)]*)\)", profile_stderr)
    return match.group(1) if match else None


def read_guest_outputs(out: Path) -> tuple[SuiteCounts | None, list[ProbeRow], str | None]:
    suite = probes = None
    junit = out / "junit.xml"
    if junit.is_file():
        try:
            suite = parse_junit(junit.read_text())
        except ET.ParseError:
            suite = None
    try:
        probes = parse_probe_table((out / "profile.json").read_text())
    except (OSError, ValueError, KeyError):
        probes = []
    try:
        compiled_with = parse_compiled_with((out / "profile.err").read_text())
    except OSError:
        compiled_with = None
    return suite, probes, compiled_with


def save(result: KernelResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILE).write_text(json.dumps(result.to_json(), indent=2) + "\n")


def load_all(results_root: Path) -> list[KernelResult]:
    return [KernelResult.from_json(json.loads(path.read_text()))
            for path in sorted(results_root.glob(f"*/{RESULT_FILE}"))]


def _suite_cell(result: KernelResult) -> str:
    if result.not_run:
        return "not run"
    hangs = f" ({result.boot_hangs} boot{'s' if result.boot_hangs > 1 else ''} stuck, killed)" if result.boot_hangs else ""
    if result.timed_out:
        return f"timed out after {result.wall_s / 60:.0f} min{hangs}"
    if result.suite is None:
        return f"exit {result.exit_status} (no junit){hangs}"
    s = result.suite
    text = f"{s.passed} passed, {s.failed + s.errors} failed"
    if s.skipped:
        text += f", {s.skipped} skipped"
    if result.parallel_cpus is not None:
        p = result.parallel_cpus
        text += (f" (of which {p.passed + p.failed + p.errors + p.skipped} in a second boot, "
                 "a TCG thread per vCPU)")
    return text + hangs


def render_markdown(results: list[KernelResult], header: str) -> str:
    """docs/kernels.md: one row per kernel, then kernels × probes (attach method or why not)."""
    lines = [header.rstrip(), "", "## Suite results", "",
             "| kernel | release | BPF compiled with | command | result | wall |",
             "|---|---|---|---|---|---|"]
    for r in results:
        wall = f"{r.wall_s / 60:.1f} min" if r.wall_s else "—"
        lines.append(f"| {r.kernel} | {r.release or '—'} | {r.compiled_with or '—'} | "
                     f"`{_cell(r.command)}` | {_suite_cell(r)} | {wall} |")
    not_run = [r for r in results if r.not_run]
    if not_run:
        lines += ["", "Not run:", ""] + [f"- **{r.kernel}**: {r.not_run}" for r in not_run]
    failing = [r for r in results if r.suite and r.suite.failed_tests]
    if failing:
        lines += ["", "Failing tests:", ""]
        for r in failing:
            lines += [f"- **{r.kernel}**: " + ", ".join(f"`{t}`" for t in r.suite.failed_tests)]
    booted = [r for r in results if r.probes]
    if booted:
        names: list[str] = []
        for r in booted:
            for row in r.probes:
                if row.name not in names:
                    names.append(row.name)
        lines += ["", "## Probes per kernel", "",
                  "Each cell: how the probe attached, or ✗ and why not (from `netprof profile --json`).",
                  "", "| probe | " + " | ".join(r.kernel for r in booted) + " |",
                  "|---|" + "---|" * len(booted)]
        for name in names:
            cells = []
            for r in booted:
                row = next((p for p in r.probes if p.name == name), None)
                if row is None:
                    cells.append("—")
                elif row.attached:
                    cells.append(row.via)
                else:
                    cells.append(f"✗ {row.via}: {(row.error or '').replace('|', '/')}")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    """A table cell's text: a `|` (a shell pipe in a command) would end the cell."""
    return text.replace("|", "\\|")
