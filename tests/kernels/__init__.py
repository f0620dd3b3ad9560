"""The kernel matrix: netprof's integration tests (or any command) on other kernels, under QEMU.

`make kernels` (python -m tests.kernels) installs what it needs, boots each kernel of
matrix.py with virtme-ng over a copy-on-write view of this machine's root, runs the command
inside, and brings back the exit status, the junit report and the probe table into the
--out directory; docs/kernels.md is regenerated from those results. See docs/kernels.md.
"""
