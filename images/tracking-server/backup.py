"""Backups of the tracking server's databases: `python /app/backup.py backup|list|verify|restore`.

One tool for the cluster and the local stack (the chart's backup CronJob, the schema-migration init
container and `python -m local backup|restore` all run this file with the same environment as the
server): MLFLOW_BACKEND_STORE_URI (the tracking database), the basic-auth database from the file at
MLFLOW_AUTH_CONFIG_PATH, the sign-in plugin's database from OIDC_USERS_DB_URI when single sign-on is on,
and MLFLOW_AKS_BACKUP_DESTINATION, a `wasbs://<container>@<account>.blob...
/<prefix>` URI reached with the pod's workload identity (no storage key), or with
AZURE_STORAGE_CONNECTION_STRING where one is set (the local stack's Azurite).

**A backup** is one consistent logical dump of the server's databases (tracking, users and, with single
sign-on, the sign-in plugin's): one connection, one InnoDB snapshot
(`START TRANSACTION WITH CONSISTENT SNAPSHOT`), so a batch of metrics being written is in it whole or
not at all, and the databases agree with each other. Rows are streamed (an unbuffered cursor), the
dump is gzip-compressed as it is produced and uploaded as it is compressed, so memory and disk stay
small whatever the database's size. The blob is committed once complete, then marked complete (its
SHA-256, size and row counts in its metadata); `list` and `latest` only see complete backups.

**The format**: gzip of SQL text, one statement per line. It starts with a header naming each database
by its role (`tracking`, `auth`, `sign-in`), holds `DROP TABLE`/`CREATE TABLE`/`INSERT` statements, and
ends with a trailer holding the row count of every table.

**A restore** first downloads and checks the whole backup, before it touches anything:
- its SHA-256 matches the one recorded;
- the gzip stream is whole (a truncated file has no end-of-stream marker, a corrupt one fails its CRC);
- the trailer is there;
- the rows it holds are the rows the trailer counts.

Then it takes a backup of the current databases (`pre-restore`), replaces every table of the
backup's databases with the backup's, and checks the row counts again. Stop the tracking servers first: the
local stack does it for you, on the cluster `kubectl scale` does (docs/backup-and-restore.md).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

FORMAT = "mlflow-aks backup 1"
DESTINATION_ENV = "MLFLOW_AKS_BACKUP_DESTINATION"
SUFFIX = ".sql.gz"
ROWS_PER_INSERT = 500
BYTES_PER_INSERT = 512 * 1024  # well under MySQL's and MariaDB's max_allowed_packet
REASON = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class BackupError(Exception):
    """A backup could not be taken, found or trusted; the message says which and why."""


# ------------------------------------------------------------------------------------------ databases


@dataclass(frozen=True)
class Database:
    role: str
    """`tracking`, `auth` or `sign-in`: a backup restores by role, whatever the databases are called."""
    name: str
    host: str
    port: int
    user: str
    password: str


# Databases a server may not have: the sign-in plugin's, only with single sign-on. A backup holding one is
# restored without it on a server without it; any other missing database refuses the restore.
OPTIONAL_ROLES = {"sign-in"}


def _database(role: str, uri: str) -> Database:
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    if not url.drivername.startswith("mysql"):
        raise BackupError(f"the {role} database must be MySQL or MariaDB, not {url.drivername}")
    return Database(
        role,
        url.database or "",
        url.host or "127.0.0.1",
        url.port or 3306,
        url.username or "",
        url.password or "",
    )


def databases(environ: dict[str, str]) -> list[Database]:
    """The tracking, the basic-auth and (with sign-in) the plugin's database, as the server reaches them."""
    tracking = environ.get("MLFLOW_BACKEND_STORE_URI")
    if not tracking:
        raise BackupError("MLFLOW_BACKEND_STORE_URI is not set")
    found = [_database("tracking", tracking)]
    if ini := environ.get("MLFLOW_AUTH_CONFIG_PATH"):
        parser = configparser.ConfigParser()
        parser.read(ini)
        found.append(_database("auth", parser["mlflow"]["database_uri"]))
    if sign_in := environ.get("OIDC_USERS_DB_URI"):  # single sign-on: the plugin's user store
        found.append(_database("sign-in", sign_in))
    first = found[0]
    for other in found[1:]:
        if (other.host, other.port, other.user) != (first.host, first.port, first.user):
            raise BackupError("the databases must be on one server, with one user: one snapshot covers all")
    return found


def connect(database: Database, **options):
    import pymysql

    return pymysql.connect(
        host=database.host, port=database.port, user=database.user, password=database.password,
        charset="utf8mb4", **options,
    )  # fmt: skip


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


# ------------------------------------------------------------------------------------------ destination


class Destination:
    """The blob container (and prefix) backups go to."""

    def __init__(self, uri: str, environ: dict[str, str]):
        match = re.fullmatch(r"wasbs://([^@/]+)@([^./]+)\.(blob\.[^/]+)(?:/(.*))?", uri)
        if not match:
            raise BackupError(
                f"{DESTINATION_ENV} must be wasbs://<container>@<account>.blob.<suffix>/<prefix>: {uri!r}"
            )
        container, account, suffix, prefix = match.groups()
        self.prefix = (prefix or "").strip("/")
        from azure.storage.blob import BlobServiceClient

        if connection := environ.get("AZURE_STORAGE_CONNECTION_STRING"):
            service = BlobServiceClient.from_connection_string(connection)
        else:
            from azure.identity import DefaultAzureCredential

            service = BlobServiceClient(f"https://{account}.{suffix}", credential=DefaultAzureCredential())
        self.container = service.get_container_client(container)
        self.where = uri

    def _blob_name(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def list(self) -> list[dict]:
        """Complete backups, oldest first: name, size, metadata."""
        found = []
        for blob in self.container.list_blobs(name_starts_with=self._blob_name(""), include=["metadata"]):
            name = blob.name[len(self._blob_name("")) :]
            if name.endswith(SUFFIX) and "/" not in name and (blob.metadata or {}).get("complete") == "true":
                found.append({"name": name, "size": blob.size, "metadata": dict(blob.metadata)})
        return sorted(found, key=lambda b: b["name"])

    def resolve(self, name: str) -> dict:
        backups = self.list()
        if not backups:
            raise BackupError(f"no complete backup in {self.where}")
        if name == "latest":
            return backups[-1]
        for backup in backups:
            if backup["name"] == name:
                return backup
        raise BackupError(f"no complete backup named {name!r} in {self.where} (see `backup.py list`)")

    def upload(self, name: str, chunks: Iterable[bytes]) -> None:
        # A block blob uploaded from an iterator is committed when the iterator ends: never half-visible.
        self.container.get_blob_client(self._blob_name(name)).upload_blob(iter(chunks), overwrite=False)

    def mark_complete(self, name: str, metadata: dict[str, str]) -> None:
        self.container.get_blob_client(self._blob_name(name)).set_blob_metadata(
            {**metadata, "complete": "true"}
        )

    def download(self, name: str, into: io.BufferedWriter) -> None:
        self.container.get_blob_client(self._blob_name(name)).download_blob().readinto(into)


# ------------------------------------------------------------------------------------------ dump


def _value(conn, value) -> str:
    if isinstance(value, float) and value != value:  # NaN: MySQL stores none; never written by MLflow
        raise BackupError("a NaN value in the database cannot be dumped")
    return conn.escape(value)


def dump_lines(conn, targets: list[Database], counts: dict[str, int]) -> Iterator[str]:
    """The backup's statements, one per line, read in the connection's snapshot; fills `counts`."""
    cursor_class = __import__("pymysql").cursors.SSCursor
    yield f"-- {FORMAT}\n"
    yield f"-- created {datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}\n"
    yield "-- databases " + json.dumps({d.role: d.name for d in targets}) + "\n"
    for database in targets:
        yield f"-- database {database.role}\n"
        with conn.cursor() as cursor:
            cursor.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND table_type = 'BASE TABLE' ORDER BY table_name",
                (database.name,),
            )
            tables = [row[0] for row in cursor.fetchall()]
        for table in tables:
            qualified = f"{_ident(database.name)}.{_ident(table)}"
            with conn.cursor() as cursor:
                cursor.execute(f"SHOW CREATE TABLE {qualified}")
                create = cursor.fetchone()[1]
            yield f"DROP TABLE IF EXISTS {_ident(table)};\n"
            yield " ".join(create.split("\n")) + ";\n"
            rows = 0
            with conn.cursor(cursor_class) as cursor:
                cursor.execute(f"SELECT * FROM {qualified}")  # noqa: S608 - names from information_schema
                columns = ", ".join(_ident(c[0]) for c in cursor.description)
                # Names from information_schema, values escaped by the driver: text meant to be SQL.
                insert = f"INSERT INTO {_ident(table)} ({columns}) VALUES "  # noqa: S608
                batch: list[str] = []
                size = 0
                for row in cursor:
                    values = "(" + ",".join(_value(conn, v) for v in row) + ")"
                    batch.append(values)
                    size += len(values)
                    rows += 1
                    if len(batch) >= ROWS_PER_INSERT or size >= BYTES_PER_INSERT:
                        yield insert + ",".join(batch) + ";\n"
                        batch, size = [], 0
                if batch:
                    yield insert + ",".join(batch) + ";\n"
            counts[f"{database.role}.{table}"] = rows
            yield f"-- rows {json.dumps({'table': table, 'rows': rows})}\n"
    yield "-- end " + json.dumps({"tables": counts}, sort_keys=True) + "\n"


def _gzip(lines: Iterable[str], digest) -> Iterator[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: a gzip stream
    buffered: list[bytes] = []
    size = 0
    for line in lines:
        buffered.append(line.encode())
        size += len(buffered[-1])
        if size >= 1024 * 1024:
            chunk = compressor.compress(b"".join(buffered))
            buffered, size = [], 0
            if chunk:
                digest.update(chunk)
                yield chunk
    chunk = compressor.compress(b"".join(buffered)) + compressor.flush()
    digest.update(chunk)
    yield chunk


def take(destination: Destination, targets: list[Database], reason: str) -> dict:
    """Dump both databases in one snapshot to `destination`; return the backup's name and metadata."""
    if not REASON.fullmatch(reason):
        raise BackupError(f"reason must be lowercase letters, digits and '-': {reason!r}")
    name = f"mlflow-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%fZ')}-{reason}{SUFFIX}"
    counts: dict[str, int] = {}
    digest = hashlib.sha256()
    started = time.monotonic()
    conn = connect(targets[0], autocommit=False)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        size = [0]

        def measured(chunks: Iterator[bytes]) -> Iterator[bytes]:
            for chunk in chunks:
                size[0] += len(chunk)
                yield chunk

        destination.upload(name, measured(_gzip(dump_lines(conn, targets, counts), digest)))
        conn.rollback()
    finally:
        conn.close()
    metadata = {
        "format": FORMAT.replace(" ", "-"),
        "sha256": digest.hexdigest(),
        "bytes": str(size[0]),
        "rows": str(sum(counts.values())),
        "tables": str(len(counts)),
        "reason": reason,
    }
    destination.mark_complete(name, metadata)
    return {"name": name, "seconds": round(time.monotonic() - started, 1), **metadata}


# ------------------------------------------------------------------------------------------ check, restore


@dataclass
class Checked:
    """A downloaded backup that passed every check, ready to restore."""

    path: str
    databases: dict[str, str]
    counts: dict[str, int]


def _statements(path: str) -> Iterator[str]:
    with gzip.open(path, "rt", encoding="utf-8", newline="\n") as lines:
        yield from lines


def check(destination: Destination, name: str, workdir: str) -> Checked:
    """Download `name` into `workdir` and refuse it unless it is whole and what it claims to be."""
    backup = destination.resolve(name)
    path = os.path.join(workdir, backup["name"])
    with open(path, "wb") as out:
        destination.download(backup["name"], out)
    digest = hashlib.sha256()
    with open(path, "rb") as raw:
        while block := raw.read(1024 * 1024):
            digest.update(block)
    metadata = backup["metadata"]
    size = os.path.getsize(path)
    if str(size) != metadata.get("bytes"):
        raise BackupError(
            f"{backup['name']}: {size} bytes, not the {metadata.get('bytes')} recorded: truncated"
        )
    if digest.hexdigest() != metadata.get("sha256"):
        raise BackupError(f"{backup['name']}: its SHA-256 is not the one recorded when it was taken: corrupt")
    found: dict[str, int] = {}
    header: dict[str, str] = {}
    trailer = None
    role = None
    try:
        for line in _statements(path):
            if line.startswith("-- databases "):
                header = json.loads(line[len("-- databases ") :])
            elif line.startswith("-- database "):
                role = line[len("-- database ") :].strip()
            elif line.startswith("-- rows "):
                table = json.loads(line[len("-- rows ") :])
                found[f"{role}.{table['table']}"] = table["rows"]
            elif line.startswith("-- end "):
                trailer = json.loads(line[len("-- end ") :])["tables"]
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BackupError(f"{backup['name']}: unreadable ({error}): truncated or corrupt") from error
    if trailer is None:
        raise BackupError(f"{backup['name']}: no end marker: truncated")
    if found != trailer or not {key.split(".", 1)[0] for key in trailer} <= set(header):
        raise BackupError(f"{backup['name']}: its tables do not add up to what its end marker counts")
    return Checked(path, header, trailer)


def restore(
    destination: Destination, targets: list[Database], name: str, *, safety_backup: bool = True
) -> dict:
    """Replace the backup's databases with backup `name` (after checking it, and backing up what is there)."""
    with tempfile.TemporaryDirectory(prefix="mlflow-restore-") as workdir:
        checked = check(destination, name, workdir)
        by_role = {d.role: d for d in targets}
        missing = set(checked.databases) - set(by_role)
        if missing - OPTIONAL_ROLES:
            raise BackupError(
                f"the backup holds the {sorted(missing)} database(s), which this server does not have"
            )
        # A backup taken with single sign-on, restored after switching back to basic auth: the sign-in
        # users are left out (the server has no use for them), everything else is restored.
        roles = [role for role in checked.databases if role in by_role]
        safety = take(destination, targets, "pre-restore") if safety_backup else None
        started = time.monotonic()
        conn = connect(targets[0], autocommit=True)
        try:
            with conn.cursor() as cursor:
                cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
                cursor.execute("SET UNIQUE_CHECKS = 0")
                # A stored 0 in an AUTO_INCREMENT column (MLflow's Default experiment is id 0) stays 0,
                # instead of taking the next id (what mysqldump's header does too).
                cursor.execute("SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',NO_AUTO_VALUE_ON_ZERO')")
                for role in roles:
                    target = by_role[role]
                    cursor.execute(
                        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                        "AND table_type = 'BASE TABLE'",
                        (target.name,),
                    )
                    for (table,) in cursor.fetchall():
                        cursor.execute(f"DROP TABLE {_ident(target.name)}.{_ident(table)}")
                role = None
                for line in _statements(checked.path):
                    if line.startswith("-- database "):
                        role = line[len("-- database ") :].strip()
                        if role in by_role:
                            cursor.execute(f"USE {_ident(by_role[role].name)}")
                    elif role in by_role and not line.startswith("--") and line.strip():
                        cursor.execute(line.rstrip("\n").rstrip(";"))
                cursor.execute("SET FOREIGN_KEY_CHECKS = 1")
                restored = {}
                expected = {k: v for k, v in checked.counts.items() if k.split(".", 1)[0] in by_role}
                for key in expected:
                    role, table = key.split(".", 1)
                    cursor.execute(f"SELECT COUNT(*) FROM {_ident(by_role[role].name)}.{_ident(table)}")  # noqa: S608
                    restored[key] = cursor.fetchone()[0]
        finally:
            conn.close()
        if restored != expected:
            raise BackupError("after the restore, the tables do not hold the backup's rows")
        return {
            "restored": os.path.basename(checked.path),
            "rows": sum(restored.values()),
            "seconds": round(time.monotonic() - started, 1),
            "safety_backup": safety["name"] if safety else None,
            "left_out": sorted(missing),
        }


# ------------------------------------------------------------------------------------------ command line


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    take_cmd = commands.add_parser("backup", help="take a backup now")
    take_cmd.add_argument("--reason", default="manual", help="word in the backup's name (scheduled, ...)")
    commands.add_parser("list", help="complete backups, oldest first")
    verify_cmd = commands.add_parser("verify", help="download a backup and check it, changing nothing")
    verify_cmd.add_argument("name", help="a backup's name, or `latest`")
    restore_cmd = commands.add_parser("restore", help="replace the databases with a backup")
    restore_cmd.add_argument("name", help="a backup's name, or `latest`")
    restore_cmd.add_argument(
        "--no-safety-backup", action="store_true", help="do not back up the current data first"
    )
    args = parser.parse_args(argv)
    try:
        uri = environ.get(DESTINATION_ENV)
        if not uri:
            raise BackupError(f"{DESTINATION_ENV} is not set")
        destination = Destination(uri, environ)
        if args.command == "backup":
            result = take(destination, databases(environ), args.reason)
        elif args.command == "list":
            result = {"backups": destination.list()}
        elif args.command == "verify":
            with tempfile.TemporaryDirectory(prefix="mlflow-verify-") as workdir:
                checked = check(destination, args.name, workdir)
                result = {"verified": os.path.basename(checked.path), "rows": sum(checked.counts.values())}
        else:
            result = restore(
                destination, databases(environ), args.name, safety_backup=not args.no_safety_backup
            )
    except BackupError as error:
        print(f"backup.py: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
