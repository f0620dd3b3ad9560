"""The guest tiers under tests/kernels/ run only inside a harness guest built for them.

tests/kernels/mq and tests/kernels/nics change IRQ affinity, RPS/XPS masks and NIC channels
of the machine they run on: they are collected only where the harness set NETPROF_GUEST_TIER
to their directory's name (the bookworm-6.1-mq and bookworm-6.1-nics guests), never by the
host's suite. tests/kernels/vagrant removes and installs OS packages and provisions
/opt/netprof: only in the bookworm-6.1-vagrant guest.
"""
from __future__ import annotations

import os

GUEST_TIERS = ("mq", "nics", "vagrant")
collect_ignore = [tier for tier in GUEST_TIERS if os.environ.get("NETPROF_GUEST_TIER") != tier]
