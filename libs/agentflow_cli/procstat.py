"""CPU accounting of processes from /proc, for the benches: what each process of the mesh spent."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int | str) -> float:
    """CPU seconds (user + system) a live process has used; 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    # After "pid (comm)": state is field 3, utime 14, stime 15 (1-based) -> 11 and 12 here.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> float:
    """CPU seconds the whole machine has spent not idle, summed over cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    # guest time is already counted in user/nice: only the first eight fields add up.
    return (sum(values[:8]) - idle) / CLK_TCK
