"""The package's shape: import layers (the contracts in pyproject.toml, checked by import-linter)
and modules small enough for one person to hold in their head (issue 13)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
MAX_MODULE_LINES = 600
# Python under these folders is product code (bpf/ holds the package that ships the C sources).
PRODUCT_DIRS = ("profiler", "tui", "bpf")
# profiler/analysis/detectors/ is a package, one detector module per signal: the same limit
# covers each module.


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """import-linter on the contracts of cwd/pyproject.toml, over the packages found in cwd."""
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_import_contracts_hold():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_contracts_catch_an_import_up_a_layer_and_a_circle(tmp_path):
    """The same contracts over a copy of the tree with two planted imports: the lab importing
    the demo (a floor up) and the Kubernetes resolvers importing the pod directory (the old
    pods <-> k8s circle). Both must be reported, or the passing check above means nothing."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("profiler", "tui"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    assert lint_imports(tmp_path).returncode == 0  # the copy alone is as clean as the tree

    registry = tmp_path / "profiler/lab/registry.py"
    registry.write_text(registry.read_text() + "\nfrom profiler.demo import run_demo  # planted\n")
    base = tmp_path / "profiler/k8s/base.py"
    base.write_text(base.read_text() + "\nfrom profiler.pods import PodDirectory  # planted\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0
    assert "profiler.lab.registry -> profiler.demo" in result.stdout, result.stdout
    assert "profiler.k8s.base -> profiler.pods" in result.stdout, result.stdout


def oversized(root: Path) -> dict[str, int]:
    """Product modules over MAX_MODULE_LINES lines, by path relative to root."""
    found = {}
    for folder in PRODUCT_DIRS:
        for path in sorted((root / folder).rglob("*.py")):
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > MAX_MODULE_LINES:
                found[path.relative_to(root).as_posix()] = lines
    return found


def test_no_product_module_is_over_600_lines():
    found = oversized(REPO)
    assert not found, f"modules over {MAX_MODULE_LINES} lines (split them along their seams): {found}"


def test_the_line_count_sees_a_long_module(tmp_path):
    (tmp_path / "tui").mkdir()
    (tmp_path / "tui/short.py").write_text("x = 1\n" * MAX_MODULE_LINES)
    (tmp_path / "tui/long.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    assert oversized(tmp_path) == {"tui/long.py": MAX_MODULE_LINES + 1}
