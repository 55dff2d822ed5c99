"""Process-tree facts from /proc: the members of a tree and their memory (PSS, else RSS)."""

from __future__ import annotations

import os
from pathlib import Path

from local.procs import all_stat_fields, stat_fields

PROC = Path("/proc")


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, fields in all_stat_fields().items():
        children.setdefault(int(fields[1]), []).append(pid)
    return children


def tree(pid: int) -> list[int]:
    """`pid` and all of its live descendants."""
    children = _children_map()
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        if (PROC / str(current)).exists():
            found.append(current)
        todo.extend(children.get(current, []))
    return found


def _rollup_kib(pid: int, field: str) -> int | None:
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def _rss_kib(pid: int) -> int:
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def memory_measure() -> str:
    """'PSS' when this kernel exposes smaps_rollup for our own process, else 'RSS'."""
    return "PSS" if _rollup_kib(os.getpid(), "Pss") is not None else "RSS"


def tree_memory_mib(pid: int, measure: str | None = None) -> tuple[float, int, str]:
    """(memory of the whole tree in MiB, process count, measure used) — one measure for all members."""
    measure = measure or memory_measure()
    pids = tree(pid)
    total_kib = 0
    for member in pids:
        if measure == "PSS":
            total_kib += _rollup_kib(member, "Pss") or 0
        else:
            total_kib += _rss_kib(member)
    return total_kib / 1024.0, len(pids), measure


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time used so far by the live members of `pid`'s tree."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for member in tree(pid):
        if (fields := stat_fields(member)) is not None:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _established_inodes(port: int) -> set[str]:
    """Socket inodes of established TCP connections whose local port is `port`."""
    inodes = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01":  # 01: ESTABLISHED
                inodes.add(fields[9])
    return inodes


def connections_per_process(pid: int, port: int) -> list[int]:
    """How many established connections to `port` each process of `pid`'s tree holds (non-zero, sorted)."""
    inodes = _established_inodes(port)
    counts = []
    for member in tree(pid):
        held = 0
        try:
            for fd in (PROC / str(member) / "fd").iterdir():
                try:
                    target = os.readlink(fd)
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    held += 1
        except OSError:
            continue
        if held:
            counts.append(held)
    return sorted(counts, reverse=True)
