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
from dataclasses import asdict, dataclass, field
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
# The data a restore put in place, backed up before the server serves it: where a restore to a later time
# starts (see _mark_restored). The team's data, so `latest` may be one.
POST_RESTORE_KIND = "post-restore"
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


@dataclass(frozen=True)
class Server:
    """The database server's flavour and binary logging, which backups and point-in-time recovery follow."""

    mariadb: bool
    log_bin: bool
    lineage: str
    """Names one server's binary logs: they restart at .000001 on a new data directory (a new disk).
    MySQL's server_uuid is made with its data directory; MariaDB has none (the local stack's, one per
    stack), so its server id stands in."""

    @classmethod
    def of(cls, cursor) -> Server:
        cursor.execute("SELECT @@version, @@log_bin, @@server_id")
        version, log_bin, server_id = cursor.fetchone()
        mariadb = "mariadb" in version.lower()
        if mariadb:
            lineage = f"mariadb-{server_id}"
        else:
            cursor.execute("SELECT @@server_uuid")
            lineage = cursor.fetchone()[0]
        return cls(mariadb, bool(int(log_bin)), lineage)

    def log_position(self, cursor) -> tuple[str, int]:
        """The binary log being written, and the position in it (MySQL 8.4 renamed SHOW MASTER STATUS)."""
        cursor.execute("SHOW MASTER STATUS" if self.mariadb else "SHOW BINARY LOG STATUS")
        row = cursor.fetchone()
        return row[0], int(row[1])


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


# ------------------------------------------------------------------------------------------ status

# What the alerts read (alerts/rules.yaml): each backup and each binary-log shipment records the time it
# succeeded or failed in the user database's `mlflow_aks_platform` table (name -> value, migrate.py), and
# the tracking server exposes them as gauges (metrics.py). The database, not the Job's pod, so that the
# same alert works on the cluster and on the local stack, and the server needs no access to the backups.
STATUS_TABLE = "mlflow_aks_platform"
BACKUP_SUCCESS = "backup_last_success_at"
BACKUP_FAILURE = "backup_last_failure_at"
BINLOGS_SUCCESS = "binlogs_last_success_at"
BINLOGS_FAILURE = "binlogs_last_failure_at"
BINLOGS_INTERVAL = "binlogs_ship_interval_seconds"
# Written by migrate.py when the platform first runs on the database.
INSTALLED_AT = "installed_at"
STATUS_NAMES = (
    BACKUP_SUCCESS,
    BACKUP_FAILURE,
    BINLOGS_SUCCESS,
    BINLOGS_FAILURE,
    BINLOGS_INTERVAL,
    INSTALLED_AT,
)
# The shipping schedule's interval in seconds (the chart sets it from backup.binaryLogs.schedule's minutes).
BINLOGS_INTERVAL_ENV = "MLFLOW_AKS_BINLOG_SHIP_SECONDS"


def record_status(targets: list[Database], values: dict[str, str], connect_to=None) -> bool:
    """Write `values` (name -> value) into the user database's status table; False (and a line on stderr)
    when it cannot: the backup or shipment itself stands, and the alerts then see no news of it."""
    auth = next((target for target in targets if target.role == "auth"), None)
    if auth is None or not values:
        return False
    table = f"{_ident(auth.name)}.{_ident(STATUS_TABLE)}"
    sql = f"INSERT INTO {table} (name, value) VALUES (%s, %s) ON DUPLICATE KEY UPDATE value = VALUES(value)"  # noqa: S608
    try:
        conn = (connect_to or connect)(auth, autocommit=True, connect_timeout=10)
        try:
            with conn.cursor() as cursor:
                for name, value in values.items():
                    cursor.execute(sql, (name, value))
        finally:
            conn.close()
    except Exception as error:
        print(
            f"backup.py: could not record {', '.join(values)}: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return False
    return True


def read_status(targets: list[Database], connect_to=None) -> dict[str, str]:
    """The status rows (STATUS_NAMES) as the user database holds them now; empty when it cannot say."""
    auth = next((target for target in targets if target.role == "auth"), None)
    if auth is None:
        return {}
    table = f"{_ident(auth.name)}.{_ident(STATUS_TABLE)}"
    marks = ", ".join(["%s"] * len(STATUS_NAMES))
    try:
        conn = (connect_to or connect)(auth, autocommit=True, connect_timeout=10)
        try:
            with conn.cursor() as cursor:
                cursor.execute(f"SELECT name, value FROM {table} WHERE name IN ({marks})", STATUS_NAMES)  # noqa: S608
                return {name: value for name, value in cursor.fetchall()}
        finally:
            conn.close()
    except Exception:
        return {}


@contextlib.contextmanager
def _status_kept(targets: list[Database]):
    """Around a restore, which puts back the status table as the backup holds it: the record of backups
    and shipments does not go back in time with the data, so the rows are written back as they were, and
    the backup of the restored data (`post_restore_backup`, in the dict yielded) counts as a good backup."""
    before = read_status(targets)
    result: dict = {}
    yield result
    if result.get("post_restore_backup"):
        before[BACKUP_SUCCESS] = _now()
    record_status(targets, before)


def _now() -> str:
    return f"{time.time():.3f}"


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

    def completed_under(self, path: str) -> dict[str, dict[str, str]]:
        """Blobs below `path` (names relative to it) that have their marker: name -> the marker's metadata."""
        base = self._blob_name(path.strip("/") + "/")
        found = {}
        for blob in self.container.list_blobs(name_starts_with=base, include=["metadata"]):
            name = blob.name[len(base) :]
            if name.endswith(MARKER) and (blob.metadata or {}).get("complete") == "true":
                found[name[: -len(MARKER)]] = dict(blob.metadata)
        return found

    def upload_file(self, name: str, path: str) -> None:
        with open(path, "rb") as source:
            self.container.get_blob_client(self._blob_name(name)).upload_blob(source, overwrite=False)

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
            with conn.cursor() as cursor:
                # Generated columns (MLflow's spans.duration_ns) are computed by the table itself: a value
                # given for one is refused on restore (error 1906 in strict mode). MySQL marks a plain
                # column with an empty expression, MariaDB with NULL.
                cursor.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                    "AND table_name = %s AND COALESCE(generation_expression, '') = '' "
                    "ORDER BY ordinal_position",
                    (database.name, table),
                )
                columns = ", ".join(_ident(row[0]) for row in cursor.fetchall())
            with conn.cursor(cursor_class) as cursor:
                cursor.execute(f"SELECT {columns} FROM {qualified}")  # noqa: S608 - names from information_schema
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
            server = Server.of(cursor)
            # MySQL: where the log stands just before the snapshot, so replaying from there re-applies at
            # most a few transactions the snapshot holds (idempotently). MariaDB names the exact position.
            position = server.log_position(cursor) if server.log_bin and not server.mariadb else None
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            snapshot_at = datetime.now(UTC)
            if server.log_bin and server.mariadb:
                cursor.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
                found = dict(cursor.fetchall())
                position = (found["Binlog_snapshot_file"], int(found["Binlog_snapshot_position"]))
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
        "snapshot_at": snapshot_at.isoformat(),
        # Where point-in-time recovery replays the binary logs from, on top of this backup.
        **(
            {
                "binlog_lineage": server.lineage,
                "binlog_file": position[0],
                "binlog_position": str(position[1]),
                "binlog_exact": str(server.mariadb).lower(),
            }
            if position
            else {}
        ),
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


@dataclass
class Plan:
    """One restore: which backup goes into which databases, through which staging ones. Kept as JSON in the
    restore's directory between the stages of a point-in-time restore (stage, replay, swap)."""

    backup: str
    runs: int
    roles: list[str]
    live: dict[str, str]
    staging: dict[str, str]
    replaced: dict[str, str]
    left_out: list[str]
    safety_backup: str | None = None
    created: list[str] = field(default_factory=list)
    triggers: dict[str, list[dict]] = field(default_factory=dict)
    rows: int = 0
    point_in_time: dict | None = None
    post_restore_backup: str | None = None

    def save(self, directory: str) -> None:
        with open(os.path.join(directory, PLAN_FILE), "w") as out:
            json.dump(asdict(self), out)

    @classmethod
    def load(cls, directory: str) -> Plan:
        try:
            with open(os.path.join(directory, PLAN_FILE)) as source:
                return cls(**json.load(source))
        except FileNotFoundError:
            raise BackupError(f"no staged restore in {directory}: run `restore --stage` first") from None


PLAN_FILE = "plan.json"


def _plan(
    destination: Destination, targets: list[Database], checked: Checked, name: str, force: bool
) -> Plan:
    """Refuse what must not be restored; the staging names of what will be."""
    backup_name = os.path.basename(checked.path)
    by_role = {d.role: d for d in targets}
    missing = set(checked.databases) - set(by_role)
    if missing - OPTIONAL_ROLES:
        raise BackupError(
            f"the backup holds the {sorted(missing)} database(s), which this server does not have"
        )
    # A backup taken with single sign-on, restored after switching back to basic auth: the sign-in users
    # are left out (the server has no use for them), everything else is restored.
    roles = [role for role in checked.databases if role in by_role]
    live = {role: by_role[role].name for role in roles}
    plan = Plan(
        backup=backup_name,
        runs=checked.counts.get("tracking.runs", 0),
        roles=roles,
        live=live,
        staging={role: live[role] + STAGING_SUFFIXES[0] for role in roles},
        replaced={role: live[role] + STAGING_SUFFIXES[1] for role in roles},
        left_out=sorted(missing),
    )
    if not plan.runs and not force:
        conn = connect(targets[0], autocommit=True)
        try:
            with conn.cursor() as cursor:
                runs_now = _runs_in(cursor, by_role.get("tracking"))
        finally:
            conn.close()
        _refuse_empty(destination, backup_name, name, runs_now)
    return plan


def _has_tables(targets: list[Database], plan: Plan) -> bool:
    conn = connect(targets[0], autocommit=True)
    try:
        with conn.cursor() as cursor:
            return any(_tables(cursor, plan.live[role]) for role in plan.roles)
    finally:
        conn.close()


def _restore_session(targets: list[Database]):
    """A connection for restoring: foreign keys and unique checks off while loading, and, when the server
    writes binary logs, not logged: what a restore writes is the backup's, and point-in-time recovery
    starts after a restore from where it ended (its marker), never through it."""
    import pymysql

    conn = connect(targets[0], autocommit=True)
    with conn.cursor() as cursor:
        cursor.execute("SET FOREIGN_KEY_CHECKS = 0")
        cursor.execute("SET UNIQUE_CHECKS = 0")
        # A stored 0 in an AUTO_INCREMENT column (MLflow's Default experiment is id 0) stays 0, instead of
        # taking the next id (what mysqldump's header does too).
        cursor.execute("SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',NO_AUTO_VALUE_ON_ZERO')")
        if Server.of(cursor).log_bin:
            with contextlib.suppress(pymysql.err.OperationalError):  # without the privilege: logged
                cursor.execute("SET SESSION sql_log_bin = 0")
    return conn


def _stage(conn, checked: Checked, plan: Plan) -> None:
    """The backup loaded into fresh staging databases and its rows counted. On any failure what it made is
    dropped again; the live databases are untouched either way."""
    try:
        with conn.cursor() as cursor:
            for role in plan.roles:
                _, options = _schema_options(cursor, plan.live[role])
                # Leftovers of an interrupted restore go first.
                for schema in (plan.staging[role], plan.replaced[role]):
                    cursor.execute(f"DROP DATABASE IF EXISTS {_ident(schema)}")
                    cursor.execute(f"CREATE DATABASE {_ident(schema)} {options}")
            loaded, plan.triggers = _load(cursor, checked, plan.staging)
            expected = {k: v for k, v in checked.counts.items() if k.split(".", 1)[0] in plan.staging}
            if loaded != expected:
                raise BackupError("the loaded tables do not hold the backup's rows")
            plan.rows = sum(loaded.values())
    except BaseException as error:
        _drop_quietly(conn, [*plan.staging.values(), *plan.replaced.values()])
        if isinstance(error, Exception):
            raise _unchanged(plan, error) from error
        raise


def _unchanged(plan: Plan, error: Exception) -> BackupError:
    return BackupError(
        f"restoring {plan.backup} failed ({error}); the databases are as they were before"
        + (f" (and backed up as {plan.safety_backup})" if plan.safety_backup else "")
    )


def _swap(conn, plan: Plan) -> None:
    """Swap the staging databases' tables in at once (missing databases made just before); then the
    backup's triggers, and the leftovers gone."""
    dropped: dict[str, list[dict]] = {}
    try:
        with conn.cursor() as cursor:
            for role in plan.roles:
                exists, options = _schema_options(cursor, plan.live[role])
                if not exists:
                    cursor.execute(f"CREATE DATABASE {_ident(plan.live[role])} {options}")
                    plan.created.append(plan.live[role])
            present = {role: _tables(cursor, plan.live[role]) for role in plan.roles}
            staged = {role: _tables(cursor, plan.staging[role]) for role in plan.roles}
            if not any(staged.values()):
                raise BackupError("the staging databases hold no table")
            # Live triggers keep their tables from moving: dropped just before the swap, made again if it
            # fails (below).
            live_triggers = {role: _triggers(cursor, plan.live[role]) for role in plan.roles}
            for role in plan.roles:
                for trigger in live_triggers[role]:
                    cursor.execute(f"DROP TRIGGER {_ident(plan.live[role])}.{_ident(trigger['name'])}")
            dropped = live_triggers
            # The swap: one statement, applied whole or not at all (MySQL 8.4 reference manual, "RENAME
            # TABLE Statement": "If any errors occur during a RENAME TABLE, the statement fails and no
            # changes are made"; MariaDB: "The rename operation is done atomically").
            moves = [
                f"{_ident(plan.live[r])}.{_ident(t)} TO {_ident(plan.replaced[r])}.{_ident(t)}"
                for r in plan.roles
                for t in present[r]
            ]
            moves += [
                f"{_ident(plan.staging[r])}.{_ident(t)} TO {_ident(plan.live[r])}.{_ident(t)}"
                for r in plan.roles
                for t in staged[r]
            ]
            cursor.execute("RENAME TABLE " + ", ".join(moves))
    except BaseException as error:
        _restore_triggers_quietly(conn, plan.live, dropped)
        _drop_quietly(conn, [*plan.staging.values(), *plan.replaced.values(), *plan.created])
        if isinstance(error, Exception):
            raise _unchanged(plan, error) from error
        raise
    try:
        with conn.cursor() as cursor:
            for role in plan.roles:
                _create_triggers(cursor, plan.live[role], plan.triggers.get(role, []))
    except Exception as error:
        raise BackupError(
            f"{plan.backup} is restored, but its triggers could not be made again ({error}): "
            "run the same restore again"
        ) from error
    _drop_quietly(conn, [*plan.staging.values(), *plan.replaced.values()])


def _mark_restored(conn, destination: Destination, targets: list[Database], plan: Plan) -> None:
    """With binary logs: a restore is where a new history begins. A marker records when it happened, and a
    backup of the restored data (`post-restore`, taken before the server serves again) is where a restore
    to a later time starts; one to a time after a restore never replays the logs across it."""
    with conn.cursor() as cursor:
        server = Server.of(cursor)
        if not server.log_bin:
            return
        cursor.execute("FLUSH BINARY LOGS")
    restored_at = datetime.now(UTC)
    destination.mark_complete(
        f"{BINLOGS}/{server.lineage}/{RESTORE_MARKER}{restored_at.strftime('%Y%m%dT%H%M%S%fZ')}",
        {"restored": plan.backup, "restored_at": restored_at.isoformat(), "binlog_lineage": server.lineage},
    )
    try:
        plan.post_restore_backup = take(
            destination, targets, POST_RESTORE_KIND, metadata={"restored_at": restored_at.isoformat()}
        )["name"]
    except Exception as error:
        raise BackupError(
            f"{plan.backup} is restored, but the backup of the restored data failed ({error}): a "
            "restore to a time after this one is not possible until the next backup; take one now "
            "(`backup.py backup`)"
        ) from error


def _result(plan: Plan, started: float) -> dict:
    return {
        "restored": plan.backup,
        "rows": plan.rows,
        "runs": plan.runs,
        "seconds": round(time.monotonic() - started, 1),
        "safety_backup": plan.safety_backup,
        "created": plan.created,
        "left_out": plan.left_out,
        "post_restore_backup": plan.post_restore_backup,
        **({"point_in_time": plan.point_in_time} if plan.point_in_time else {}),
    }


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
    (the refusals), and change nothing: what to run while the server still serves."""
    with tempfile.TemporaryDirectory(prefix="mlflow-restore-") as workdir:
        checked = check(destination, name, workdir)
        plan = _plan(destination, targets, checked, name, force)
        if dry_run:
            return {"would_restore": plan.backup, "runs": plan.runs}
        # Nothing to keep when every table is gone (the databases were dropped): no empty safety copy.
        if safety_backup and _has_tables(targets, plan):
            plan.safety_backup = take(destination, targets, SAFETY_KIND)["name"]
        started = time.monotonic()
        conn = _restore_session(targets)
        try:
            _stage(conn, checked, plan)
            _swap(conn, plan)
            _mark_restored(conn, destination, targets, plan)
        finally:
            conn.close()
        return _result(plan, started)


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


# ------------------------------------------------------------------------------------------ binary logs
#
# Point-in-time recovery: the server writes binary logs (row format, synced at every commit); every few
# minutes the binlog Job closes the current one (FLUSH BINARY LOGS) and ships the closed ones it has not
# shipped yet to `<destination>/binlogs/<lineage>/`, in three steps of one pod: `binlogs plan` (this
# image: what to fetch), the MySQL image's mysqlbinlog (`fetch.sh`: the logs, byte for byte, over the
# replication protocol), `binlogs upload` (this image). Each shipped log is a new blob with its marker,
# so the container may be write-once. Restoring to a time T loads the newest backup (or restore) before T
# into staging databases, replays the shipped logs from its position up to T into them (`replay.sh`,
# mysqlbinlog piped into mysql, again the MySQL image's), then swaps them in as any restore does.

BINLOGS = "binlogs"
# A marker under a lineage's logs: a restore happened there, and the restored data's history goes on from
# the position it names.
RESTORE_MARKER = "restored-"
FETCH_SCRIPT = "fetch.sh"
REPLAY_SCRIPT = "replay.sh"
CLIENT_OPTIONS = "client.cnf"


def _log_index(name: str) -> int:
    return int(name.rsplit(".", 1)[1])


def _client_options(database: Database, directory: str) -> str:
    """A MySQL client option file (0600) with the server and the user: how mysqlbinlog and mysql sign in,
    with no password on a command line. On the cluster the directory is an in-memory volume."""
    path = os.path.join(directory, CLIENT_OPTIONS)
    # A quoted value may hold anything but its own quote and a line break; `\\` stands for a backslash
    # (MySQL 8.4 reference manual, "Using Option Files"). The platform's passwords are letters and digits.
    quote = next((q for q in ('"', "'") if q not in database.password), None)
    if quote is None or "\n" in database.password:
        raise BackupError("the database password holds both quote characters or a line break: MySQL's client "
                          "tools cannot be given it in an option file")  # fmt: skip
    password = database.password.replace("\\", "\\\\")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(
            f'[client]\nhost="{database.host}"\nport={database.port}\nuser="{database.user}"\n'
            f"password={quote}{password}{quote}\n"
        )
    return path


def _script(directory: str, name: str, lines: list[str]) -> str:
    path = os.path.join(directory, name)
    with open(path, "w") as out:
        out.write("\n".join(["#!/bin/bash", "set -euo pipefail", *lines]) + "\n")
    return path


def binlogs_plan(destination: Destination, targets: list[Database], directory: str, secrets: str) -> dict:
    """Close the current binary log and write `fetch.sh`, which fetches the closed ones not shipped yet."""
    conn = connect(targets[0], autocommit=True)
    try:
        with conn.cursor() as cursor:
            server = Server.of(cursor)
            if not server.log_bin:
                raise BackupError(
                    "the database server writes no binary logs (charts/mysql binaryLogs.enabled)"
                )
            cursor.execute("FLUSH BINARY LOGS")
            cursor.execute("SHOW BINARY LOGS")
            logs = [row[0] for row in cursor.fetchall()]
    finally:
        conn.close()
    shipped = destination.completed_under(f"{BINLOGS}/{server.lineage}")
    wanted = [name for name in logs[:-1] if name not in shipped]  # the last one is being written
    options = _client_options(targets[0], secrets)
    quoted = " ".join(f"'{name}'" for name in wanted)
    _script(
        directory,
        FETCH_SCRIPT,
        [f"cd '{directory}'"]
        + (
            [f"mysqlbinlog --defaults-extra-file='{options}' --read-from-remote-server --raw {quoted}"]
            if wanted
            else ["echo 'nothing to fetch'"]
        ),
    )
    with open(os.path.join(directory, "wanted.json"), "w") as out:
        json.dump({"lineage": server.lineage, "wanted": wanted}, out)
    return {"lineage": server.lineage, "wanted": wanted}


def binlogs_upload(destination: Destination, directory: str) -> dict:
    """Ship what `fetch.sh` fetched, each log with its marker (its SHA-256 and when it was shipped)."""
    with open(os.path.join(directory, "wanted.json")) as source:
        wanted = json.load(source)
    shipped = []
    for name in wanted["wanted"]:
        path = os.path.join(directory, name)
        if not os.path.getsize(path):
            raise BackupError(f"{name} was not fetched: see the fetch step's log")
        digest = hashlib.sha256()
        with open(path, "rb") as source:
            while block := source.read(1024 * 1024):
                digest.update(block)
        blob = f"{BINLOGS}/{wanted['lineage']}/{name}"
        destination.upload_file(blob, path)
        destination.mark_complete(
            blob,
            {
                "sha256": digest.hexdigest(),
                "bytes": str(os.path.getsize(path)),
                "shipped_at": datetime.now(UTC).isoformat(),
            },
        )
        shipped.append(name)
    return {"lineage": wanted["lineage"], "shipped": shipped}


def binlogs_list(destination: Destination) -> dict:
    """Shipped logs and restore markers, by lineage."""
    found: dict[str, dict] = {}
    for name, metadata in destination.completed_under(BINLOGS).items():
        lineage, _, rest = name.partition("/")
        entry = found.setdefault(lineage, {"logs": [], "restores": []})
        if rest.startswith(RESTORE_MARKER):
            entry["restores"].append({"marker": rest, **metadata})
        else:
            entry["logs"].append({"name": rest, "shipped_at": metadata.get("shipped_at")})
    for entry in found.values():
        entry["logs"].sort(key=lambda log: _log_index(log["name"]))
    return found


def _parse_time(text: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BackupError(f"--to must be a time like 2026-12-02T14:30:00Z: {text!r}") from None
    if parsed.tzinfo is None:
        raise BackupError(f"--to needs a time zone (Z for UTC): {text!r}")
    return parsed.astimezone(UTC)


def _base_for(destination: Destination, when: datetime) -> dict:
    """The newest backup before `when` that binary logs continue from: taken with binary logs on, at or
    before `when`. A backup of restored data counts from the restore (nothing was written between the two:
    the server was stopped). A restore in between with no backup after it leaves nothing to start from."""
    candidates = []
    for backup in destination.list():
        metadata = backup["metadata"]
        if "binlog_file" not in metadata:
            continue
        at = datetime.fromisoformat(metadata.get("restored_at") or metadata["snapshot_at"])
        if at <= when:
            candidates.append((at, backup["name"], metadata))
    restores = [
        datetime.fromisoformat(marker["restored_at"])
        for entry in binlogs_list(destination).values()
        for marker in entry["restores"]
        if datetime.fromisoformat(marker["restored_at"]) <= when
    ]
    if not candidates:
        raise BackupError(
            f"no backup taken with binary logs on before {when.isoformat()}: restore a backup by name instead"
        )
    at, name, coordinates = max(candidates, key=lambda candidate: candidate[0])
    if restores and max(restores) > at:
        raise BackupError(
            f"a restore at {max(restores).isoformat()} came after the newest backup before "
            f"{when.isoformat()}, and no backup of its data exists: the history before the restore cannot be "
            "replayed across it. Restore a backup by name instead"
        )
    return {"at": at, "backup": name, **coordinates}


def stage_point_in_time(
    destination: Destination,
    targets: list[Database],
    when_text: str,
    directory: str,
    secrets: str,
    *,
    safety_backup: bool = True,
    force: bool = False,
    dry_run: bool = False,
) -> dict:
    """The first stage of a restore to a time: the newest backup (or restore) before it loaded into the
    staging databases, the binary logs after it downloaded, and `replay.sh` written, which replays them
    into the staging databases up to that time. `swap` then swaps them in."""
    when = _parse_time(when_text)
    base = _base_for(destination, when)
    lineage = base["binlog_lineage"]
    start = _log_index(base["binlog_file"])
    logs = []
    for log in binlogs_list(destination).get(lineage, {"logs": []})["logs"]:
        index = _log_index(log["name"])
        if index == start + len(logs):  # consecutive from the base's: a log never shipped ends the replay
            logs.append(log)
        elif index > start + len(logs):
            break
    shipped_until = max((log["shipped_at"] for log in logs), default=None)
    checked = check(destination, base["backup"], directory)
    plan = _plan(destination, targets, checked, base["backup"], force)
    plan.point_in_time = {
        "to": when.isoformat(),
        "from": base["at"].isoformat(),
        "logs": [log["name"] for log in logs],
        # Changes after the last log shipped are not in any: the recovery reaches at most that far.
        "shipped_until": shipped_until,
    }
    if dry_run:
        return {"would_restore": plan.backup, "runs": plan.runs, "point_in_time": plan.point_in_time}
    if safety_backup and _has_tables(targets, plan):
        plan.safety_backup = take(destination, targets, SAFETY_KIND)["name"]
    for log in logs:
        with open(os.path.join(directory, log["name"]), "wb") as out:
            destination.download(f"{BINLOGS}/{lineage}/{log['name']}", out)
    conn = _restore_session(targets)
    try:
        with conn.cursor() as cursor:
            mariadb = Server.of(cursor).mariadb
        _stage(conn, checked, plan)
    finally:
        conn.close()
    options = _client_options(targets[0], secrets)
    files = " ".join(f"'{log['name']}'" for log in logs)
    replay = [f"cd '{directory}'", "export TZ=UTC"]
    if logs:
        for role in plan.roles:
            rewrite = f"--rewrite-db='{plan.live[role]}->{plan.staging[role]}'"
            # mysqlbinlog --database filters by the name after --rewrite-db in MySQL, before it in MariaDB.
            kept = plan.live[role] if mariadb else plan.staging[role]
            replay.append(
                # Not logged (what a restore writes is its source's); MySQL's position is from just before
                # the snapshot, so the few transactions in both are applied again, idempotently.
                "mysqlbinlog --disable-log-bin"
                + ("" if base["binlog_exact"] == "true" else " --idempotent")
                + f" --start-position={base['binlog_position']}"
                + f" --stop-datetime='{when.strftime('%Y-%m-%d %H:%M:%S')}'"
                + f" {rewrite} --database='{kept}' {files}"
                + f" | mysql --defaults-extra-file='{options}' --binary-mode"
            )
    replay.append(f"echo 'replayed {len(logs)} binary log(s) up to {when.isoformat()}'")
    _script(directory, REPLAY_SCRIPT, replay)
    plan.save(directory)
    return {"staged": plan.backup, "runs": plan.runs, "point_in_time": plan.point_in_time}


def swap_staged(destination: Destination, targets: list[Database], directory: str) -> dict:
    """The last stage of a restore to a time: swap the replayed staging databases in."""
    plan = Plan.load(directory)
    started = time.monotonic()
    conn = _restore_session(targets)
    try:
        with conn.cursor() as cursor:
            plan.rows = 0
            for role in plan.roles:
                for table in _tables(cursor, plan.staging[role]):
                    cursor.execute(
                        f"SELECT COUNT(*) FROM {_ident(plan.staging[role])}.{_ident(table)}"  # noqa: S608
                    )
                    plan.rows += cursor.fetchone()[0]
            if "tracking" in plan.roles and "runs" in _tables(cursor, plan.staging["tracking"]):
                cursor.execute(f"SELECT COUNT(*) FROM {_ident(plan.staging['tracking'])}.`runs`")  # noqa: S608
                plan.runs = cursor.fetchone()[0]
        _swap(conn, plan)
        _mark_restored(conn, destination, targets, plan)
    finally:
        conn.close()
    return _result(plan, started)


# ------------------------------------------------------------------------------------------ command line


@contextlib.contextmanager
def _recorded(
    targets: list[Database], success: str | None, failure: str, extra: dict[str, str] | None = None
):
    """Record the time of the step's success (with `extra`) or failure in the status table."""
    try:
        yield
    except BaseException:
        record_status(targets, {failure: _now()})
        raise
    if success:
        record_status(targets, {success: _now(), **(extra or {})})


def main(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> int:
    environ = dict(os.environ if environ is None else environ)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    take_cmd = commands.add_parser("backup", help="take a backup now")
    take_cmd.add_argument("--reason", default="manual", help="word in the backup's name (scheduled, ...)")
    commands.add_parser("list", help="complete backups, oldest first")
    verify_cmd = commands.add_parser("verify", help="download a backup and check it, changing nothing")
    verify_cmd.add_argument("name", help="a backup's name, or `latest`")
    restore_cmd = commands.add_parser(
        "restore", help="replace the databases with a backup, or as they were at --to"
    )
    restore_cmd.add_argument("name", nargs="?", help="a backup's name, or `latest` (not with --to)")
    restore_cmd.add_argument(
        "--to",
        default=environ.get("MLFLOW_AKS_RESTORE_TO") or None,
        help="a time (2026-12-02T14:30:00Z): the newest backup before it, then the binary logs up to it",
    )
    restore_cmd.add_argument(
        "--stage", metavar="DIR", help="with --to: where its files go (then replay.sh, swap)"
    )
    restore_cmd.add_argument("--secrets", metavar="DIR", help="with --to: where the client option file goes")
    restore_cmd.add_argument(
        "--no-safety-backup", action="store_true", help="do not back up the current data first"
    )
    restore_cmd.add_argument(
        "--force",
        action="store_true",
        default=environ.get("MLFLOW_AKS_RESTORE_FORCE") == "true",
        help="replace databases that hold runs with a backup that holds none",
    )
    restore_cmd.add_argument(
        "--dry-run",
        action="store_true",
        help="check the backup and that the restore would go ahead; change nothing",
    )
    swap_cmd = commands.add_parser(
        "swap", help="swap in what `restore --to ... --stage DIR` staged and replayed"
    )
    swap_cmd.add_argument("directory")
    logs_cmd = commands.add_parser("binlogs", help="ship binary logs: plan, (fetch.sh), upload; or list them")
    logs_cmd.add_argument("step", choices=["plan", "upload", "list"])
    logs_cmd.add_argument("directory", nargs="?")
    logs_cmd.add_argument("--secrets", metavar="DIR", help="plan: where the client option file goes")
    args = parser.parse_args(argv)
    try:
        uri = environ.get(DESTINATION_ENV)
        if not uri:
            raise BackupError(f"{DESTINATION_ENV} is not set")
        destination = Destination(uri, environ)
        if args.command == "backup":
            targets = databases(environ)
            with _recorded(targets, BACKUP_SUCCESS, BACKUP_FAILURE):
                result = take(destination, targets, args.reason)
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
        elif args.command == "restore" and args.to:
            if args.name:
                raise BackupError("restore --to chooses the backup itself: give no name")
            if not args.dry_run and not (args.stage and args.secrets):
                raise BackupError("restore --to needs --stage DIR and --secrets DIR (or --dry-run)")
            with tempfile.TemporaryDirectory(prefix="mlflow-check-") as scratch:
                result = stage_point_in_time(
                    destination,
                    databases(environ),
                    args.to,
                    args.stage or scratch,
                    args.secrets or scratch,
                    safety_backup=not args.no_safety_backup,
                    force=args.force,
                    dry_run=args.dry_run,
                )
        elif args.command == "restore":
            targets = databases(environ)
            with _status_kept(targets) if not args.dry_run else contextlib.nullcontext({}) as kept:
                result = restore(
                    destination,
                    targets,
                    args.name or "latest",
                    safety_backup=not args.no_safety_backup,
                    force=args.force,
                    dry_run=args.dry_run,
                )
                kept.update(result)
        elif args.command == "swap":
            targets = databases(environ)
            with _status_kept(targets) as kept:
                result = swap_staged(destination, targets, args.directory)
                kept.update(result)
        elif args.step == "list":
            result = binlogs_list(destination)
        elif args.step == "plan":
            if not (args.directory and args.secrets):
                raise BackupError("binlogs plan needs a DIR and --secrets DIR")
            targets = databases(environ)
            with _recorded(targets, None, BINLOGS_FAILURE):
                result = binlogs_plan(destination, targets, args.directory, args.secrets)
        else:
            if not args.directory:
                raise BackupError("binlogs upload needs the DIR its plan and fetch used")
            targets = databases(environ)
            interval = environ.get(BINLOGS_INTERVAL_ENV, "")
            with _recorded(
                targets, BINLOGS_SUCCESS, BINLOGS_FAILURE, {BINLOGS_INTERVAL: interval} if interval else {}
            ):
                result = binlogs_upload(destination, args.directory)
    except BackupError as error:
        print(f"backup.py: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # the blob store or the database failing: one line, not a traceback
        print(f"backup.py: {args.command} failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
