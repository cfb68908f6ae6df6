"""What the machine has free now: the one place that probes /proc and the cgroup.

The memory estimate (``gmm_vae.resources``) compares its sum against this; nothing else reads
the machine, so every other number is the same on any machine.
"""

from __future__ import annotations

import os
from pathlib import Path


def available_bytes() -> int | None:
    """Memory a new allocation can use now: MemAvailable, capped by a cgroup limit; None if
    unknown (then nothing is refused)."""
    avail: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        avail = None
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            avail = None
    limit = _cgroup_room()
    if limit is not None:
        avail = limit if avail is None else min(avail, limit)
    return avail


def _cgroup_room() -> int | None:
    """Bytes left under a cgroup v2 memory limit, or None without one."""
    base = Path("/sys/fs/cgroup")
    try:
        raw = (base / "memory.max").read_text().strip()
        if raw == "max":
            return None
        used = int((base / "memory.current").read_text().strip())
        return max(0, int(raw) - used)
    except (OSError, ValueError):
        return None
