"""Starting, finding and stopping the stack's processes by PID.

Each service runs as the leader of its own process group (``start_new_session``), so that stopping it
also stops whatever it forked (the tracking server's uvicorn workers) and a Ctrl-C in the terminal
that ran ``up`` does not reach it. A recorded PID is only trusted while the kernel reports the same
start time for it, so a PID reused by an unrelated process after a reboot is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


class StackError(RuntimeError):
    """A failure the CLI reports as one message (no traceback)."""


@dataclass(frozen=True)
class Proc:
    """A started process: PID (also its process-group id) and kernel start time."""

    name: str
    pid: int
    start_time: int
    log: str

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> Proc:
        return cls(**data)

    def alive(self) -> bool:
        return start_time_of(self.pid) == self.start_time

    def group_pids(self) -> list[int]:
        """Live PIDs in this process's group (itself and what it forked), empty once all are gone.

        While any member lives, the kernel keeps the group id (= our PID) from being reused, so a
        group whose leader is gone is still ours; a leader with another start time is not.
        """
        current = start_time_of(self.pid)
        if current is not None and current != self.start_time:
            return []  # the PID now belongs to an unrelated process
        return _group_members(self.pid)


def stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), None when `pid` is gone.

    The command name (2nd field) may contain spaces and parentheses: the split is after the last ')'.
    Index n here is field n + 3 of proc(5).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()


def all_stat_fields() -> dict[int, list[str]]:
    """`stat_fields` of every live process, by PID."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := stat_fields(entry.name)) is not None:
            found[int(entry.name)] = fields
    return found


def start_time_of(pid: int) -> int | None:
    """Start time (clock ticks since boot) of `pid`, or None when no such process (or a zombie)."""
    fields = stat_fields(pid)
    if fields is None or fields[0] == "Z":
        return None
    return int(fields[19])


def _group_members(pgid: int) -> list[int]:
    return [pid for pid, fields in all_stat_fields().items() if int(fields[2]) == pgid and fields[0] != "Z"]


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    cwd: Path | None = None,
) -> Proc:
    """Start `argv` in a new session with output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        try:
            popen = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        except FileNotFoundError as err:
            raise StackError(f"{name}: cannot run {argv[0]}: {err.strerror}") from None
    started = start_time_of(popen.pid)
    # The Popen object is dropped on purpose: the service outlives this Python process. Reaping
    # is done by `wait_gone` when we are still its parent, else by init.
    popen.returncode = 0  # keeps Popen.__del__ from warning about a still-running child
    return Proc(name=name, pid=popen.pid, start_time=started or 0, log=str(log))


def stop(proc: Proc, *, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
    """Signal `proc`'s process group, wait for it to go, then SIGKILL whatever remains."""
    if not proc.group_pids():
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    if wait_gone(proc, timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    if not wait_gone(proc, 10.0):
        raise StackError(f"{proc.name} (pid {proc.pid}) did not stop; see {proc.log}")


def wait_gone(proc: Proc, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(proc.pid)
        if not proc.group_pids():
            return True
        time.sleep(0.05)
    return False


def _reap(pid: int) -> None:
    """Collect the exit status if we are the parent (tests start and stop in one process)."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port free right now on `host` (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports free right now (held open together, so none is handed out twice)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(
    what: str, check: Callable[[], bool], *, timeout: float, proc: Proc | None = None, interval: float = 0.2
) -> None:
    """Poll `check` until true; fail early with the log's tail if `proc` died meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            if check():
                return
        if proc is not None and not proc.alive():
            _reap(proc.pid)
            raise StackError(f"{proc.name} exited while waiting for {what}:\n{log_tail(proc.log)}")
        if time.monotonic() > deadline:
            tail = f":\n{log_tail(proc.log)}" if proc is not None else ""
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")
        time.sleep(interval)


def log_tail(path: str | Path, lines: int = 25) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(f"    {line}" for line in text.splitlines()[-lines:])
