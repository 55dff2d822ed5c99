"""MariaDB from Debian's `mariadb-server`, run under the stack's working directory (no systemd).

`mariadb-install-db` creates the data directory once; `mariadbd` then listens on 127.0.0.1 only, on
the stack's port, as user `mysql` when started by root. The server's administrative account is
reached only through the Unix socket with `unix_socket` authentication (no root password exists);
the MLflow user gets a generated password and rights on the tracking and auth databases only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from local.procs import Proc, StackError, spawn, wait_until

INSTALL_HINT = "install MariaDB: apt-get install mariadb-server mariadb-client (or run scripts/bootstrap)"


@dataclass(frozen=True)
class MariaDBPaths:
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket(self) -> Path:
        return self.root / "mariadb.sock"

    @property
    def log(self) -> Path:
        return self.root / "mariadbd.log"

    @property
    def pid_file(self) -> Path:
        return self.root / "mariadbd.pid"

    @property
    def tmp(self) -> Path:
        """mariadbd's own tmpdir. Not /tmp: every mariadbd deletes the `#sql*` files in its tmpdir when it
        starts, so a server starting beside another (two stacks, or a stack and a bootstrap) would delete
        the other's temporary tables (`mariadb-install-db` then fails with Unknown table
        'mysql.tmp_user_sys')."""
        return self.root / "tmp"


def _find(name: str, *extra_dirs: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for directory in extra_dirs:
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def binaries() -> dict[str, str | None]:
    """The MariaDB programs the stack needs (None when missing)."""
    return {
        "mariadbd": _find("mariadbd", "/usr/sbin", "/usr/libexec"),
        "mariadb-install-db": _find("mariadb-install-db", "/usr/bin", "/usr/sbin"),
        "mariadb": _find("mariadb", "/usr/bin"),
    }


def _run_as() -> str | None:
    """`mysql` when we are root (mariadbd refuses to run as root), else None (our own user)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("mysql")
    except KeyError:
        raise StackError(f"user `mysql` does not exist: {INSTALL_HINT}") from None
    return "mysql"


def _check_traversable(path: Path, user: str) -> None:
    """mariadbd runs as `user`: every directory above its own must be enterable by that user."""
    entry = pwd.getpwnam(user)
    for parent in path.resolve().parents:
        st = parent.stat()
        if st.st_uid == entry.pw_uid:
            ok = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid == entry.pw_gid:
            ok = bool(st.st_mode & stat.S_IXGRP)
        else:
            ok = bool(st.st_mode & stat.S_IXOTH)
        if not ok:
            raise StackError(
                f"MariaDB runs as user {user}, who cannot enter {parent}: choose a working directory "
                f"outside it, or allow it with `chmod o+x {parent}`"
            )


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for current, dirs, files in os.walk(path):
        os.chown(current, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(current, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def initialise(paths: MariaDBPaths) -> None:
    """Create the data directory on first use (idempotent)."""
    bins = binaries()
    paths.root.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.root, 0o750)  # noqa: S103 (owner mysql; others get nothing)
    paths.tmp.mkdir(mode=0o700, exist_ok=True)
    user = _run_as()
    if user:
        _check_traversable(paths.root, user)
    if (paths.data / "mysql").is_dir():
        if user:
            _chown_tree(paths.root, user)
        return
    if paths.data.exists():
        shutil.rmtree(paths.data)  # a half-created directory from an interrupted first start
    socket_user = user or pwd.getpwuid(os.geteuid()).pw_name
    argv = [
        bins["mariadb-install-db"],
        "--no-defaults",
        f"--datadir={paths.data}",
        f"--tmpdir={paths.tmp}",  # passed on to the bootstrap mariadbd
        "--auth-root-authentication-method=socket",
        f"--auth-root-socket-user={socket_user}",
        "--skip-test-db",
    ]
    if user:
        argv.append(f"--user={user}")
        _chown_tree(paths.root, user)
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StackError(f"mariadb-install-db failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
    if user:
        _chown_tree(paths.root, user)


def start(
    paths: MariaDBPaths,
    port: int,
    extra_args: list[str] | None = None,
    *,
    max_connections: int | None = None,
    buffer_pool_mib: int | None = None,
) -> Proc:
    """`mariadbd` on 127.0.0.1:`port` with the stack's settings, plus `extra_args` (e.g. --init-file).

    `max_connections` and `buffer_pool_mib`: the stack passes what the chart gives its bundled MySQL
    (local/chart.py database_options), as the cluster's MySQL gets them; None keeps a small footprint
    (MariaDB's default connection limit, a 64 MiB buffer pool). MariaDB takes memory for the pool as pages
    are read, so an idle or small stack uses little of it."""
    bins = binaries()
    user = _run_as()
    argv = [
        bins["mariadbd"],
        "--no-defaults",
        f"--datadir={paths.data}",
        f"--tmpdir={paths.tmp}",
        f"--socket={paths.socket}",
        f"--pid-file={paths.pid_file}",
        f"--log-error={paths.log}",
        "--bind-address=127.0.0.1",
        f"--port={port}",
        "--skip-name-resolve",
        # utf8mb4 (MariaDB's built-in default is latin1), case-insensitive (utf8mb4_general_ci), as the
        # chart's MySQL creates its tracking database; docs/database.md#collations names the differences.
        "--character-set-server=utf8mb4",
        f"--innodb-buffer-pool-size={buffer_pool_mib or 64}M",
        "--innodb-log-file-size=48M",
        "--performance-schema=OFF",
        # Binary logs as charts/mysql writes them, for point-in-time recovery (under the data directory).
        f"--log-bin={paths.data / 'binlog'}",
        "--server-id=1",
        "--binlog-format=ROW",
        "--binlog-row-image=FULL",
        "--sync-binlog=1",
        "--log-bin-trust-function-creators=ON",  # MLflow's migration creates a trigger (charts/mysql)
    ]
    if max_connections is not None:
        argv.append(f"--max-connections={max_connections}")
    if user:
        argv.append(f"--user={user}")
    argv += extra_args or []
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    proc = spawn("mariadb", argv, env=env, log=paths.root / "mariadbd.out")
    # The error log is written by mariadbd itself; show it if it dies.
    return Proc(name=proc.name, pid=proc.pid, start_time=proc.start_time, log=str(paths.log))


def wait_ready(paths: MariaDBPaths, proc: Proc, timeout: float = 60) -> None:
    wait_until("MariaDB to accept connections", lambda: _ping(paths), timeout=timeout, proc=proc)


def _ping(paths: MariaDBPaths) -> bool:
    return sql(paths, "SELECT 1", check=False).returncode == 0


def sql(paths: MariaDBPaths, statements: str, *, check: bool = True) -> subprocess.CompletedProcess:
    """Run SQL as the administrative socket account; statements go on stdin, never on argv."""
    # unix_socket authentication: the account named after the OS user running this client (root, or
    # the user who ran mariadb-install-db with --auth-root-socket-user).
    user = pwd.getpwuid(os.geteuid()).pw_name
    argv = [binaries()["mariadb"], "--no-defaults", f"--socket={paths.socket}", f"--user={user}", "--batch"]
    done = subprocess.run(argv, input=statements, capture_output=True, text=True, check=False, timeout=30)
    if check and done.returncode != 0:
        raise StackError(f"MariaDB rejected the set-up SQL: {done.stderr.strip()}")
    return done


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


# A restore's staging databases beside each database (STAGING_SUFFIXES of images/tracking-server/backup.py,
# granted on the cluster by charts/mysql's `mysql.restoreGrants`).
RESTORE_STAGING_SUFFIXES = ("_restore", "_replaced")


def _literal(database: str) -> str:
    """A database name in a GRANT, `_` escaped: it names that one database, not a pattern."""
    return database.replace("_", "\\_")


def ensure_databases(paths: MariaDBPaths, user: str, password: str, databases: list[str]) -> None:
    """Databases and the MLflow user (from 127.0.0.1 only), with the current generated password, and its
    rights on them and on a restore's staging databases (created by the restore itself)."""
    statements = [f"CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4;" for db in databases]
    account = f"{_quote(user)}@'127.0.0.1'"
    statements += [
        f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {_quote(password)};",
        f"ALTER USER {account} IDENTIFIED BY {_quote(password)};",
    ]
    statements += [f"GRANT ALL PRIVILEGES ON `{db}`.* TO {account};" for db in databases]
    statements += [
        f"GRANT ALL PRIVILEGES ON `{_literal(db + suffix)}`.* TO {account};"
        for db in databases
        for suffix in RESTORE_STAGING_SUFFIXES
    ]
    # As charts/mysql's `mysql.binlogGrants`: read, list and close binary logs, and write a restore
    # unlogged and replay them (MariaDB: BINLOG ADMIN for sql_log_bin, BINLOG REPLAY for BINLOG statements).
    binlogs = "RELOAD, REPLICATION CLIENT, REPLICATION SLAVE, BINLOG ADMIN, BINLOG REPLAY"
    statements.append(f"GRANT {binlogs} ON *.* TO {account};")
    statements.append("FLUSH PRIVILEGES;")
    sql(paths, "\n".join(statements))
