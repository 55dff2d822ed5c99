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

Then it backs up what is there (a `pre-restore` backup; skipped when the databases hold no table), loads
the backup into staging databases (`<database>_restore`) and counts their rows, and only then swaps them
in with one `RENAME TABLE` over every table of every database, which MySQL and MariaDB apply atomically:
all or nothing. Until that statement, the live databases are untouched, so a restore that fails (a bad
statement, the database server stopping, the pod killed) leaves them exactly as they were. Databases that
are missing (dropped) are created first. Stop the tracking servers first: the local stack does it for
you, on the cluster scripts/cluster-restore does.

**Which backup.** `latest` is the newest backup of the team's data (`scheduled`, `manual` or
`pre-migration`), never a `pre-restore` copy a restore took of what it replaced: restore one of those by
name. Replacing databases that hold runs with a backup that holds none needs `--force`.
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
# A backup is complete once this empty blob exists beside it, its metadata holding the backup's checksum.
MARKER = ".complete"
ROWS_PER_INSERT = 500
BYTES_PER_INSERT = 512 * 1024  # well under MySQL's and MariaDB's max_allowed_packet
REASON = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# Kinds of backup (the reason in its name). A safety copy taken by a restore is never `latest`.
SAFETY_KIND = "pre-restore"
# Staging databases of a restore, beside each database: the backup is loaded into `<name>_restore`, and the
# tables it replaces are moved to `<name>_replaced` by the swap, then dropped. The database user needs
# every privilege on both (charts/mysql `mysql.alignSql`, local/mariadb.py grant them).
STAGING_SUFFIXES = ("_restore", "_replaced")


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

    try:
        return pymysql.connect(
            host=database.host, port=database.port, user=database.user, password=database.password,
            charset="utf8mb4", **options,
        )  # fmt: skip
    except pymysql.err.OperationalError as error:
        raise BackupError(
            f"cannot reach the database server at {database.host}:{database.port} as {database.user!r} "
            f"({error.args[-1]}): it must run first (cluster: `kubectl get pods -l "
            "app.kubernetes.io/component=database`; local stack: `python -m local up`)"
        ) from error


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


# ------------------------------------------------------------------------------------------ destination


def kind_of(name: str, metadata: dict[str, str]) -> str:
    """`scheduled`, `manual`, `pre-migration` or `pre-restore`: the reason it was taken."""
    if reason := metadata.get("reason"):
        return reason
    match = re.fullmatch(r"mlflow-\d{8}T\d+Z-(.+)" + re.escape(SUFFIX), name)
    return match.group(1) if match else "unknown"


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
        """Complete backups, oldest first: name, kind, size, metadata."""
        blobs = {}
        for blob in self.container.list_blobs(name_starts_with=self._blob_name(""), include=["metadata"]):
            name = blob.name[len(self._blob_name("")) :]
            if "/" not in name:
                blobs[name] = blob
        found = []
        for name, blob in blobs.items():
            if not name.endswith(SUFFIX):
                continue
            marker = blobs.get(name + MARKER)
            # Backups taken before markers existed carry `complete` in their own metadata.
            metadata = dict(marker.metadata or {}) if marker else dict(blob.metadata or {})
            if metadata.get("complete") == "true":
                kind = kind_of(name, metadata)
                found.append({"name": name, "kind": kind, "size": blob.size, "metadata": metadata})
        return sorted(found, key=lambda b: b["name"])

    def resolve(self, name: str) -> dict:
        backups = self.list()
        if name == "latest":
            team = [b for b in backups if b["kind"] != SAFETY_KIND]
            if not team:
                raise BackupError(
                    f"no complete backup of the team's data in {self.where}"
                    + (f" (only {SAFETY_KIND} copies: restore one by name)" if backups else "")
                )
            return team[-1]
        for backup in backups:
            if backup["name"] == name:
                return backup
        raise BackupError(f"no complete backup named {name!r} in {self.where} (see `backup.py list`)")

    def upload(self, name: str, chunks: Iterable[bytes]) -> None:
        # A block blob uploaded from an iterator is committed when the iterator ends: never half-visible.
        self.container.get_blob_client(self._blob_name(name)).upload_blob(iter(chunks), overwrite=False)

    def mark_complete(self, name: str, metadata: dict[str, str]) -> None:
        """A marker blob beside the backup, holding its checksum, size and counts. A new blob, never a
        change to the backup: the backups container may be immutable (write once, read many)."""
        self.container.get_blob_client(self._blob_name(name + MARKER)).upload_blob(
            b"", overwrite=False, metadata={**metadata, "complete": "true"}
        )

    def download(self, name: str, into: io.BufferedWriter) -> None:
        self.container.get_blob_client(self._blob_name(name)).download_blob().readinto(into)


# ------------------------------------------------------------------------------------------ dump


def _value(conn, value) -> str:
    if isinstance(value, float) and value != value:  # NaN: MySQL stores none; never written by MLflow
        raise BackupError("a NaN value in the database cannot be dumped")
    return conn.escape(value)


def _triggers(cursor, schema: str) -> list[dict[str, str]]:
    """The triggers of `schema` (MLflow guards its `secrets` table with one), each as a CREATE TRIGGER
    without a DEFINER: restored by whoever restores, so a backup moves between servers and users."""
    cursor.execute(
        "SELECT trigger_name, action_timing, event_manipulation, event_object_table, action_statement "
        "FROM information_schema.triggers WHERE trigger_schema = %s ORDER BY trigger_name",
        (schema,),
    )
    return [
        {
            "name": name,
            "table": table,
            "create": f"CREATE TRIGGER {_ident(name)} {timing} {event} ON {_ident(table)} "
            f"FOR EACH ROW {body}",
        }
        for name, timing, event, table, body in cursor.fetchall()
    ]


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
        with conn.cursor() as cursor:
            for trigger in _triggers(cursor, database.name):
                yield "-- trigger " + json.dumps(trigger) + "\n"
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


def take(
    destination: Destination, targets: list[Database], reason: str, metadata: dict[str, str] | None = None
) -> dict:
    """Dump the databases in one snapshot to `destination`; return the backup's name and metadata
    (`metadata`: more to record with it, e.g. the schema revisions before a migration)."""
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
        **(metadata or {}),
        "format": FORMAT.replace(" ", "-"),
        "sha256": digest.hexdigest(),
        "bytes": str(size[0]),
        "rows": str(sum(counts.values())),
        "runs": str(counts.get("tracking.runs", 0)),
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


def _tables(cursor, schema: str) -> list[str]:
    cursor.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
        "AND table_type = 'BASE TABLE' ORDER BY table_name",
        (schema,),
    )
    return [row[0] for row in cursor.fetchall()]


def _schema_options(cursor, schema: str) -> tuple[bool, str]:
    """Whether `schema` exists, and the CHARACTER SET / COLLATE clause to create its like with."""
    cursor.execute(
        "SELECT default_character_set_name, default_collation_name FROM information_schema.schemata "
        "WHERE schema_name = %s",
        (schema,),
    )
    row = cursor.fetchone()
    # New databases as charts/mysql creates them.
    charset, collation = row or ("utf8mb4", "utf8mb4_bin")
    return row is not None, f"CHARACTER SET {charset} COLLATE {collation}"


def _runs_in(cursor, tracking: Database | None) -> int:
    """Runs in the live tracking database (0 when it, or its runs table, is gone)."""
    if tracking is None or "runs" not in _tables(cursor, tracking.name):
        return 0
    cursor.execute(f"SELECT COUNT(*) FROM {_ident(tracking.name)}.`runs`")  # noqa: S608
    return cursor.fetchone()[0]


def _load(cursor, checked: Checked, staging: dict[str, str]) -> tuple[dict[str, int], dict[str, list[dict]]]:
    """Load the backup's databases into the (empty) staging databases: the rows each table then holds, and
    the triggers of each database, created only once the tables are in place (a table with a trigger
    cannot move to another database)."""
    role = None
    triggers: dict[str, list[dict]] = {role: [] for role in staging}
    for line in _statements(checked.path):
        if line.startswith("-- database "):
            role = line[len("-- database ") :].strip()
            if role in staging:
                cursor.execute(f"USE {_ident(staging[role])}")
        elif line.startswith("-- trigger ") and role in staging:
            triggers[role].append(json.loads(line[len("-- trigger ") :]))
        elif role in staging and not line.startswith("--") and line.strip():
            cursor.execute(line.rstrip("\n").rstrip(";"))
    loaded = {}
    for key in checked.counts:
        role, table = key.split(".", 1)
        if role in staging:
            cursor.execute(f"SELECT COUNT(*) FROM {_ident(staging[role])}.{_ident(table)}")  # noqa: S608
            loaded[key] = cursor.fetchone()[0]
    return loaded, triggers


def _create_triggers(cursor, schema: str, triggers: list[dict]) -> None:
    cursor.execute(f"USE {_ident(schema)}")
    for trigger in triggers:
        cursor.execute(trigger["create"])


def restore(
    destination: Destination,
    targets: list[Database],
    name: str,
    *,
    safety_backup: bool = True,
    force: bool = False,
    dry_run: bool = False,
) -> dict:
    """Replace the backup's databases with backup `name`: check it, back up what is there, load it beside
    the live databases, then swap it in at once. Any failure before the swap leaves the live databases
    as they were; the error says so. `dry_run`: check the backup and whether the restore would go ahead
    (the refusals below), and change nothing: what to run while the server still serves."""
    with tempfile.TemporaryDirectory(prefix="mlflow-restore-") as workdir:
        checked = check(destination, name, workdir)
        backup_name = os.path.basename(checked.path)
        by_role = {d.role: d for d in targets}
        missing = set(checked.databases) - set(by_role)
        if missing - OPTIONAL_ROLES:
            raise BackupError(
                f"the backup holds the {sorted(missing)} database(s), which this server does not have"
            )
        # A backup taken with single sign-on, restored after switching back to basic auth: the sign-in
        # users are left out (the server has no use for them), everything else is restored.
        roles = [role for role in checked.databases if role in by_role]
        live = {role: by_role[role].name for role in roles}
        staging = {role: live[role] + STAGING_SUFFIXES[0] for role in roles}
        replaced = {role: live[role] + STAGING_SUFFIXES[1] for role in roles}
        conn = connect(targets[0], autocommit=True)
        try:
            with conn.cursor() as cursor:
                present = {role: _tables(cursor, live[role]) for role in roles}
                runs_now = _runs_in(cursor, by_role.get("tracking"))
            runs_in_backup = checked.counts.get("tracking.runs", 0)
            if not runs_in_backup and not force:
                _refuse_empty(destination, backup_name, name, runs_now)
            # Nothing to keep when every table is gone (the databases were dropped): no empty safety copy.
            keep = safety_backup and any(present.values())
            if dry_run:
                return {"would_restore": backup_name, "runs": runs_in_backup, "runs_now": runs_now}
            safety = take(destination, targets, SAFETY_KIND) if keep else None
            started = time.monotonic()
            created: list[str] = []
            dropped_triggers: dict[str, list[dict]] = {}
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
                    cursor.execute("SET UNIQUE_CHECKS = 0")
                    # A stored 0 in an AUTO_INCREMENT column (MLflow's Default experiment is id 0) stays
                    # 0, instead of taking the next id (what mysqldump's header does too).
                    cursor.execute(
                        "SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',NO_AUTO_VALUE_ON_ZERO')"
                    )
                    for role in roles:
                        exists, options = _schema_options(cursor, live[role])
                        # Leftovers of an interrupted restore go first.
                        for schema in (staging[role], replaced[role]):
                            cursor.execute(f"DROP DATABASE IF EXISTS {_ident(schema)}")
                            cursor.execute(f"CREATE DATABASE {_ident(schema)} {options}")
                        if not exists:
                            cursor.execute(f"CREATE DATABASE {_ident(live[role])} {options}")
                            created.append(live[role])
                    loaded, triggers = _load(cursor, checked, staging)
                    expected = {k: v for k, v in checked.counts.items() if k.split(".", 1)[0] in staging}
                    if loaded != expected:
                        raise BackupError("the loaded tables do not hold the backup's rows")
                    # Live triggers keep their tables from moving: dropped just before the swap, made
                    # again if it fails (below).
                    live_triggers = {role: _triggers(cursor, live[role]) for role in roles}
                    for role in roles:
                        for trigger in live_triggers[role]:
                            cursor.execute(f"DROP TRIGGER {_ident(live[role])}.{_ident(trigger['name'])}")
                    dropped_triggers = live_triggers
                    # The swap: one statement, applied whole or not at all (MySQL 8.4 reference manual,
                    # "RENAME TABLE Statement": "If any errors occur during a RENAME TABLE, the statement
                    # fails and no changes are made"; MariaDB: "The rename operation is done atomically").
                    moves = [
                        f"{_ident(live[r])}.{_ident(t)} TO {_ident(replaced[r])}.{_ident(t)}"
                        for r in roles
                        for t in present[r]
                    ]
                    moves += [
                        f"{_ident(staging[r])}.{_ident(t)} TO {_ident(live[r])}.{_ident(t)}"
                        for r in roles
                        for t in _tables(cursor, staging[r])
                    ]
                    cursor.execute("RENAME TABLE " + ", ".join(moves))
            except BaseException as error:
                _restore_triggers_quietly(conn, live, dropped_triggers)
                _drop_quietly(conn, [*staging.values(), *replaced.values(), *created])
                if isinstance(error, Exception):
                    raise BackupError(
                        f"restoring {backup_name} failed ({error}); the databases are as they were before"
                        + (f" (and backed up as {safety['name']})" if safety else "")
                    ) from error
                raise
            try:
                with conn.cursor() as cursor:
                    for role in roles:
                        _create_triggers(cursor, live[role], triggers[role])
            except Exception as error:
                raise BackupError(
                    f"{backup_name} is restored, but its triggers could not be made again ({error}): "
                    "run the same restore again"
                ) from error
            _drop_quietly(conn, [*staging.values(), *replaced.values()])
        finally:
            conn.close()
        return {
            "restored": backup_name,
            "rows": sum(loaded.values()),
            "runs": runs_in_backup,
            "seconds": round(time.monotonic() - started, 1),
            "safety_backup": safety["name"] if safety else None,
            "created": created,
            "left_out": sorted(missing),
        }


def _refuse_empty(destination: Destination, backup_name: str, asked: str, runs_now: int) -> None:
    """A backup without runs replaces runs only when forced: those in the databases, or, for `latest`
    (say, a scheduled backup of the empty databases a server started on after a loss), those of an
    older backup."""
    if runs_now:
        raise BackupError(
            f"{backup_name} holds no runs, and the tracking database holds {runs_now}: restoring it would "
            "replace them with nothing. Restore another backup, or pass --force if this is really what "
            "you want; nothing was changed"
        )
    if asked == "latest":
        older = [
            b for b in destination.list()
            if b["kind"] != SAFETY_KIND and int(b["metadata"].get("runs", "0")) > 0
        ]  # fmt: skip
        if older:
            raise BackupError(
                f"the latest backup, {backup_name}, holds no runs, but {older[-1]['name']} holds "
                f"{older[-1]['metadata']['runs']}: restore that one by name, or pass --force to restore "
                "the empty one; nothing was changed"
            )


def _restore_triggers_quietly(conn, live: dict[str, str], dropped: dict[str, list[dict]]) -> None:
    """After a failed swap, the live tables get back the triggers dropped for it."""
    import pymysql

    try:
        with conn.cursor() as cursor:
            for role, triggers in dropped.items():
                _create_triggers(cursor, live[role], triggers)
    except pymysql.err.Error:
        return


def _drop_quietly(conn, schemas: list[str]) -> None:
    """Drop what a restore made for itself; a database server that is gone leaves them for the next one."""
    import pymysql

    for schema in schemas:
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {_ident(schema)}")
        except pymysql.err.Error:
            return


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
    restore_cmd.add_argument(
        "--force", action="store_true", help="replace databases that hold runs with a backup that holds none"
    )
    restore_cmd.add_argument(
        "--dry-run",
        action="store_true",
        help="check the backup and that the restore would go ahead; change nothing",
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
                result = {
                    "verified": os.path.basename(checked.path),
                    "runs": checked.counts.get("tracking.runs", 0),
                    "rows": sum(checked.counts.values()),
                }
        else:
            result = restore(
                destination,
                databases(environ),
                args.name,
                safety_backup=not args.no_safety_backup,
                force=args.force,
                dry_run=args.dry_run,
            )
    except BackupError as error:
        print(f"backup.py: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # the blob store or the database failing: one line, not a traceback
        print(f"backup.py: {args.command} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
