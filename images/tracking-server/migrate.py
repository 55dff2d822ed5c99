"""Schema migration of the tracking server's databases: `python /app/migrate.py`.

Run by the tracking Deployment's init container (and by the local stack) before the server starts:
initialises a fresh tracking database or upgrades it to this image's MLflow version (what
`mlflow db upgrade` does), then the basic-auth user store (MLflow's `auth db upgrade`). Reads the
same settings as the server: MLFLOW_BACKEND_STORE_URI, and the auth database URI from the file at
MLFLOW_AUTH_CONFIG_PATH.

With OIDC_USERS_DB_URI set (single sign-on, `tracking.auth.mode: oidc`), the sign-in plugin's user store
(mlflow-oidc-auth) is migrated too, under the same lock and after the same backup: the plugin would
otherwise migrate it from every server process at once on first use.

With MLFLOW_RUN_USERNAME and MLFLOW_RUN_PASSWORD set, it then makes sure that basic-auth user exists
as a non-admin with that password: the identity of run Jobs, which so never hold the admin password.
The platform owns that password: it is set to the stack's at every start.

With MLFLOW_AUTH_ADMIN_USERNAME and MLFLOW_AUTH_ADMIN_PASSWORD set, the admin user exists, and takes
the stack's admin password whenever that password is not the one last applied to this database: on a
fresh database, and on data kept from another stack (adopted after `pulumi destroy`, whose admin
password is gone with it). Otherwise it is left alone, so a password the admin changed through the UI
stays changed: the stack's `adminPassword` output is the *initial* password. What was last applied is
recorded as a keyed hash in the auth database's table `mlflow_aks_platform`, never the password.

Pods that start together would otherwise run the same migration at once; on MySQL/MariaDB a named
lock (GET_LOCK) makes them take turns, and the second one finds nothing left to do.

Before migrating existing data (a database's revision differs from this image's head), a backup is taken:
MLflow's migrations are not transactional, and MLflow's upgrade notes say to back up first. The server's
identity has no access to backups, so the chart's pre-migration Job of the release (MLFLOW_AKS_BACKUP_JOB,
`migrate.py backup-before`, as the backup identity) takes it once this init container holds the lock,
and records it in the auth database; only then does the migration run. When the backup fails, or backups
are off, it refuses to migrate, and the pod does not start. A new, empty database needs no backup.

`migrate.py rollback-guard` is Helm's pre-rollback hook: run with the image of the version being rolled
back to, it restores the pre-migration backup of that version's schema when a newer version migrated it
(and then failed), so that the old servers start on data they can serve.

With MLFLOW_AKS_BACKUP_MODE=managed (an Azure Database for MySQL flexible server, whose point-in-time
restore is the backup), it logs the UTC time just before migrating and the `az mysql flexible-server
restore` command that brings the server back to it (MLFLOW_AKS_DATABASE_SERVER, _RESOURCE_GROUP), then
migrates.

With MLFLOW_CRYPTO_KEK_PASSPHRASE set (always, in the chart), the AI Gateway's stored keys are then
re-wrapped with the stack's key-encryption key where needed: kek.py (adoption and rotation).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import datetime
import hashlib
import hmac
import importlib.util
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy

sys.path.insert(0, str(Path(__file__).resolve().parent))  # /app's modules, wherever this runs from
import kek

LOCK_NAME = "mlflow_schema_migration"
LOCK_TIMEOUT_SECONDS = 900
CONNECT_DEADLINE_SECONDS = 300
UNKNOWN_DATABASE = 1049  # MySQL's and MariaDB's ER_BAD_DB_ERROR

log = logging.getLogger("migrate")


def _connect_with_retry(engine: sqlalchemy.engine.Engine) -> sqlalchemy.engine.Connection:
    """The database may still be starting (fresh install): retry for a while, then fail loudly. A database
    that does not exist was lost (MySQL creates every one on its first start): no retry, the way out."""
    deadline = time.monotonic() + CONNECT_DEADLINE_SECONDS
    while True:
        try:
            return engine.connect()
        except sqlalchemy.exc.OperationalError as e:
            if getattr(e.orig, "args", (None,))[0] == UNKNOWN_DATABASE:
                raise SystemExit(
                    f"migrate: the database {engine.url.database!r} does not exist on "
                    f"{engine.url.host}:{engine.url.port or 3306}: it was dropped or lost, and the server "
                    "will not start on nothing. Restore a backup: `scripts/cluster-restore latest` on the "
                    "cluster, `python -m local restore latest` on the local stack "
                    "(docs/backup-and-restore.md)"
                ) from e
            if time.monotonic() > deadline:
                raise
            log.info("database not reachable yet (%s); retrying", e.orig)
            time.sleep(3)


@contextlib.contextmanager
def migration_lock(uri: str) -> Iterator[None]:
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    conn = _connect_with_retry(engine)
    try:
        if engine.dialect.name != "mysql":  # MariaDB reports "mysql" too
            yield
            return
        got = conn.execute(
            sqlalchemy.text("SELECT GET_LOCK(:name, :timeout)"),
            {"name": LOCK_NAME, "timeout": LOCK_TIMEOUT_SECONDS},
        ).scalar()
        if got != 1:
            raise SystemExit(f"migrate: could not take the {LOCK_NAME} lock in {LOCK_TIMEOUT_SECONDS}s")
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:name)"), {"name": LOCK_NAME})
    finally:
        conn.close()
        engine.dispose()


# MLflow's first basic-auth migration names the foreign keys of two tables `fk_user_id`, but MySQL
# and MariaDB want foreign-key names unique per database, so a fresh auth database fails there
# ("Duplicate key on write or update", mlflow/mlflow#9642, open). Rename the second one as alembic
# creates the table; later migrations never refer to it by name.
_DUPLICATE_FK_RENAMES = {("registered_model_permissions", "fk_user_id"): "fk_registered_model_perm_user_id"}


@sqlalchemy.event.listens_for(sqlalchemy.Table, "before_create")
def _unique_foreign_key_names(table: sqlalchemy.Table, connection, **_: object) -> None:
    if connection.dialect.name != "mysql":
        return
    for constraint in table.constraints:
        new_name = _DUPLICATE_FK_RENAMES.get((table.name, constraint.name))
        if isinstance(constraint, sqlalchemy.ForeignKeyConstraint) and new_name:
            constraint.name = new_name


def ensure_run_user(auth_uri: str, username: str, password: str) -> None:
    """Create the run Jobs' user (not an admin), or reset its password to the configured one."""
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(auth_uri)
    try:
        if not store.has_user(username, use_primary=True):
            store.create_user(username, password, is_admin=False)
            log.info("created the run user %r", username)
        elif not store.authenticate_user(username, password, use_primary=True):
            store.update_user(username, password=password)
            ensure_platform_tables(store.engine)
            record_user_change(store.engine, username)
            log.info("reset the password of the run user %r", username)
    finally:
        store.engine.dispose()


SIGN_IN_DB_ENV = "OIDC_USERS_DB_URI"
# The plugin's version table (its OIDC_ALEMBIC_VERSION_TABLE, left at the default).
SIGN_IN_VERSION_TABLE = "alembic_version"


@dataclass(frozen=True)
class Schema:
    """Where one database's schema stands against this image's migrations."""

    role: str
    """backup.py's role of the database: `tracking`, `auth` or `sign-in`."""
    label: str
    uri: str
    current: str | None
    """Its alembic revision (None: unversioned, or a new database)."""
    head: str | None
    """This image's head revision (None: this image has no such schema, e.g. MLflow 2 before basic auth)."""
    new: bool
    """Nothing in it yet: a new database, initialised without a backup."""
    known: bool
    """Whether this image's migrations know `current`: False means a newer version migrated it."""

    @property
    def pending(self) -> bool:
        return not self.new and self.current != self.head

    def describe(self) -> str:
        return f"{self.label}: {self.current or 'unversioned'} -> {self.head}"


# Where each database's alembic scripts are in the image, by package: read without importing MLflow (seconds
# the pre-migration Job and the rollback guard need not spend) or the plugin.
SCRIPT_DIRECTORIES = {
    "tracking": ("mlflow", "store/db_migrations"),
    "auth": ("mlflow", "server/auth/db/migrations"),
    "sign-in": ("mlflow_oidc_auth", "db/migrations"),
}


def _scripts(role: str):
    """This image's alembic scripts of a database role (None when the image has none for it: MLflow before
    2.5 has no basic auth, an image without the sign-in plugin no sign-in database)."""
    from alembic.script import ScriptDirectory

    package, path = SCRIPT_DIRECTORIES[role]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    directory = Path(spec.submodule_search_locations[0]) / path
    return ScriptDirectory(str(directory)) if directory.is_dir() else None


def schemas(tracking_uri: str, auth_uri: str | None, sign_in_uri: str | None = None) -> list[Schema]:
    """The tracking, user and (with sign-in) sign-in databases against this image's migrations."""
    from alembic.migration import MigrationContext
    from alembic.util.exc import CommandError

    databases = [("tracking", "tracking database", tracking_uri, "alembic_version")]
    if auth_uri:
        databases.append(("auth", "user database", auth_uri, "alembic_version_auth"))
    if sign_in_uri:
        databases.append(("sign-in", "sign-in database", sign_in_uri, SIGN_IN_VERSION_TABLE))
    found = []
    for role, label, uri, version_table in databases:
        engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
        try:
            tables = set(sqlalchemy.inspect(engine).get_table_names())
            with engine.connect() as conn:
                current = MigrationContext.configure(
                    conn, opts={"version_table": version_table}
                ).get_current_revision()
        finally:
            engine.dispose()
        scripts = _scripts(role)
        head = scripts.get_current_head() if scripts else None
        try:
            known = current is None or (scripts is not None and scripts.get_revision(current) is not None)
        except CommandError:  # "Can't locate revision": a newer version's migration
            known = False
        found.append(Schema(role, label, uri, current, head, not tables - {version_table}, known))
    return found


def pending_migrations(tracking_uri: str, auth_uri: str, sign_in_uri: str | None = None) -> list[str]:
    """Which existing databases this image would migrate: `<database>: <revision> -> <head>`."""
    return [s.describe() for s in schemas(tracking_uri, auth_uri, sign_in_uri) if s.pending]


# The pre-migration backup is taken by the chart's pre-migration Job (`migrate.py backup-before`), with the
# backup identity: the tracking server's own has no access to backups. The server's init container holds
# the migration lock and waits until the Job has recorded, in the user database's mlflow_aks_platform
# table, a backup of exactly the schemas it is about to migrate; the Job waits for that lock to be held,
# which under the Deployment's Recreate strategy means the old servers are gone and nothing writes.
BACKUP_JOB_ENV = "MLFLOW_AKS_BACKUP_JOB"
BACKUP_WAIT_ENV = "MLFLOW_AKS_BACKUP_WAIT_SECONDS"
PRE_MIGRATION = "pre-migration"
FAILED = "failed: "


def backup_record(states: list[Schema]) -> str:
    """The record's name: the schemas about to be migrated, from where to where."""
    digest = hashlib.sha256(json.dumps([[s.role, s.current, s.head] for s in states if s.pending]).encode())
    return f"{PRE_MIGRATION}:{digest.hexdigest()[:48]}"


def _recorded(auth_uri: str, name: str) -> str | None:
    engine = sqlalchemy.create_engine(auth_uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.begin() as conn:
            return conn.execute(sqlalchemy.select(PLATFORM.c.value).where(PLATFORM.c.name == name)).scalar()
    except sqlalchemy.exc.DBAPIError:  # the table is not there yet
        return None
    finally:
        engine.dispose()


def _record(auth_uri: str, name: str, value: str | None) -> None:
    engine = sqlalchemy.create_engine(auth_uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        ensure_platform_tables(engine)
        with engine.begin() as conn:
            conn.execute(PLATFORM.delete().where(PLATFORM.c.name == name))
            if value is not None:
                conn.execute(PLATFORM.insert().values(name=name, value=value))
    finally:
        engine.dispose()


def await_backup(states: list[Schema], auth_uri: str) -> str:
    """Init container: wait until the pre-migration Job has backed up what is about to be migrated."""
    pending = "; ".join(s.describe() for s in states if s.pending)
    job = os.environ.get(BACKUP_JOB_ENV)
    if not job:
        raise SystemExit(
            f"migrate: refusing to migrate existing data ({pending}) without a backup: backups are off "
            "(backup.enabled); back up by hand, then turn them on"
        )
    record = backup_record(states)
    deadline = time.monotonic() + float(os.environ.get(BACKUP_WAIT_ENV, "3600"))
    log.info("waiting for the backup before migrating (%s): Job %s", pending, job)
    while (name := _recorded(auth_uri, record)) is None:
        if time.monotonic() > deadline:
            raise SystemExit(
                f"migrate: refusing to migrate: the backup before it was not taken in time; see why with "
                f"`kubectl logs job/{job}`"
            )
        time.sleep(2)
    if name.startswith(FAILED):
        _record(auth_uri, record, None)  # a retry of the Job records again
        raise SystemExit(
            f"migrate: refusing to migrate: the backup before it failed: {name[len(FAILED) :]} "
            f"(`kubectl logs job/{job}`)"
        )
    log.info("backup %s taken by Job %s", name, job)
    return record


def backup_before(tracking_uri: str, auth_uri: str, sign_in_uri: str | None) -> int:
    """The pre-migration Job: back up what this image's servers are about to migrate, once the old servers
    are gone (a new server holds the migration lock), and record it for them."""
    import backup  # beside this file (/app in the image)

    for uri in (tracking_uri, auth_uri, sign_in_uri):
        if uri:
            _require_database(uri)
    states = schemas(tracking_uri, auth_uri, sign_in_uri)
    if not any(s.pending for s in states):
        log.info("nothing to migrate: no backup needed")
        return 0
    record = backup_record(states)
    if name := _recorded(auth_uri, record):
        log.info("already backed up before this migration: %s", name)
        return 0
    deadline = time.monotonic() + float(os.environ.get(BACKUP_WAIT_ENV, "3600"))
    log.info("waiting until a new server waits to migrate (the old ones are then gone)")
    engine = sqlalchemy.create_engine(tracking_uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            while not conn.execute(sqlalchemy.text("SELECT IS_USED_LOCK(:n)"), {"n": LOCK_NAME}).scalar():
                if time.monotonic() > deadline:
                    raise SystemExit("migrate: no server came to migrate; no backup taken")
                time.sleep(1)
    finally:
        engine.dispose()
    destination = os.environ.get(backup.DESTINATION_ENV)
    if not destination:
        raise SystemExit(f"migrate: {backup.DESTINATION_ENV} is not set: no backup taken")
    log.info("backing up before migrating (%s)", "; ".join(s.describe() for s in states if s.pending))
    try:
        taken = backup.take(
            backup.Destination(destination, dict(os.environ)),
            backup.databases(dict(os.environ)),
            PRE_MIGRATION,
            # What the schemas were: the version these are restored with after a failed upgrade.
            metadata={"schema": json.dumps({s.role: s.current for s in states})},
        )
    except Exception as error:
        # The waiting server stops waiting, and says why.
        _record(auth_uri, record, f"{FAILED}{type(error).__name__}: {error}"[:255])
        raise SystemExit(f"migrate: the backup before migrating failed: {error}") from error
    _record(auth_uri, record, taken["name"])
    log.info("backup %s taken (%s rows, %s bytes)", taken["name"], taken["rows"], taken["bytes"])
    return 0


def rollback_guard(tracking_uri: str, auth_uri: str | None, sign_in_uri: str | None) -> int:
    """Helm's pre-rollback hook, run by the version being rolled back to: if a newer version migrated the
    schema (and then failed), restore the newest pre-migration backup taken at this version's schema."""
    import backup

    states = schemas(tracking_uri, auth_uri, sign_in_uri)
    ahead = [s for s in states if not s.known]
    if not ahead:
        log.info("the schema is this version's: nothing to restore")
        return 0
    mine = {s.role: s.head for s in states}
    destination = backup.Destination(os.environ[backup.DESTINATION_ENV], dict(os.environ))
    matching = [
        b for b in destination.list()
        if b["kind"] == PRE_MIGRATION and all(_schema_of(b).get(role) == head for role, head in mine.items())
    ]  # fmt: skip
    newer = "; ".join(f"{s.label} at {s.current}" for s in ahead)
    if not matching:
        raise SystemExit(
            f"migrate: a newer version migrated the schema ({newer}), and no pre-migration backup of this "
            "version's schema exists: this version cannot serve it. Restore a backup by hand "
            "(docs/backup-and-restore.md) or deploy the newer version again"
        )
    chosen = matching[-1]["name"]
    log.info("a newer version migrated the schema (%s) and its upgrade failed: restoring %s", newer, chosen)
    done = backup.restore(destination, backup.databases(dict(os.environ)), chosen, force=True)
    log.info(
        "restored %s (%s runs); what the newer version wrote is kept as %s",
        done["restored"], done["runs"], done["safety_backup"],
    )  # fmt: skip
    return 0


def _schema_of(backup: dict) -> dict[str, str | None]:
    """The schema revisions a pre-migration backup recorded, by role."""
    return json.loads(backup["metadata"].get("schema", "{}"))


def _require_database(uri: str) -> None:
    """The database is reachable and exists (or the way out is named), waiting while MySQL starts."""
    if sqlalchemy.engine.make_url(uri).get_backend_name() != "mysql":
        return
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        _connect_with_retry(engine).close()
    finally:
        engine.dispose()


BACKUP_MODE_ENV = "MLFLOW_AKS_BACKUP_MODE"
MANAGED_BACKUPS = "managed"


def restore_point_before_migrating(pending: list[str], now: datetime.datetime | None = None) -> str:
    """Log the time just before migrating and the command that restores the server to it (Azure keeps the
    point-in-time backups); return that command."""
    moment = now or datetime.datetime.now(datetime.UTC)
    at = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    server = os.environ.get("MLFLOW_AKS_DATABASE_SERVER", "<server>")
    group = os.environ.get("MLFLOW_AKS_DATABASE_RESOURCE_GROUP", "<resource group>")
    # The restored server is a new one beside it (a flexible server name has at most 63 characters).
    restored = f"{server[:45]}-{moment.strftime('%Y%m%d-%H%M')}"
    command = (
        f"az mysql flexible-server restore --resource-group {group} --name {restored} "
        f"--source-server {server} --restore-time {at}"
    )
    log.info(
        "migrating existing data (%s) at %s UTC without a backup of our own: the server's point-in-time "
        "restore keeps it; to go back to the data as it was, run: %s",
        "; ".join(pending),
        at,
        command,
    )
    return command


# The platform's own tables in the basic-auth database (created by `ensure_platform_tables`):
# - mlflow_aks_platform: name -> value, e.g. the keyed hash of the last admin password applied;
# - mlflow_aks_user_changes: an append-only log of users whose password, admin flag or existence
#   changed. Each server process reads it every second and drops those users from its credential cache
#   (serve.py, change 10), so a revocation on one replica holds on all of them within seconds.
PLATFORM_METADATA = sqlalchemy.MetaData()
PLATFORM = sqlalchemy.Table(
    "mlflow_aks_platform",
    PLATFORM_METADATA,
    sqlalchemy.Column("name", sqlalchemy.String(64), primary_key=True),
    sqlalchemy.Column("value", sqlalchemy.String(255), nullable=False),
)
USER_CHANGES = sqlalchemy.Table(
    "mlflow_aks_user_changes",
    PLATFORM_METADATA,
    sqlalchemy.Column(
        "id",
        sqlalchemy.BigInteger().with_variant(sqlalchemy.Integer, "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sqlalchemy.Column("username", sqlalchemy.String(255), nullable=False),
)
ADMIN_PASSWORD_APPLIED = "admin_password_applied"  # noqa: S105 - a row name, not a password


# When the platform first ran on this database: until a first backup, the backup alert counts from here
# (the name backup.py's STATUS_NAMES and metrics.py know it by).
INSTALLED_AT = "installed_at"

# The platform's indexes of MLflow's tracking tables, created after MLflow's migrations (under the same
# lock), and again whenever one is missing: MLflow's migrations never name them, so they neither clash
# with nor depend on MLflow's schema versions. Named `mlflow_aks_*`.
# - runs newest first in an experiment: the experiment page's runs search (order by start time, newest
#   first, ties by run id; fast_store.py drops MLflow's redundant NULL ordering so the index serves it) reads
#   one page of index entries instead of sorting every run of the experiment.
RUNS_NEWEST_INDEX = "mlflow_aks_runs_newest"


def tracking_indexes(metadata: sqlalchemy.MetaData) -> list[sqlalchemy.Index]:
    runs = metadata.tables["runs"]
    return [
        sqlalchemy.Index(
            RUNS_NEWEST_INDEX,
            runs.c.experiment_id,
            runs.c.lifecycle_stage,
            runs.c.start_time.desc(),
            runs.c.run_uuid,
        )
    ]


def ensure_tracking_indexes(tracking_uri: str) -> list[str]:
    """Create the platform's indexes the tracking database lacks; returns the names created."""
    engine = sqlalchemy.create_engine(tracking_uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        metadata = sqlalchemy.MetaData()
        metadata.reflect(engine, only=["runs"])
        present = {index["name"] for index in sqlalchemy.inspect(engine).get_indexes("runs")}
        created = []
        for index in tracking_indexes(metadata):
            if index.name not in present:
                index.create(engine)
                created.append(index.name)
        return created
    finally:
        engine.dispose()


def ensure_platform_tables(engine: sqlalchemy.engine.Engine) -> None:
    PLATFORM_METADATA.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        known = conn.execute(
            sqlalchemy.select(PLATFORM.c.value).where(PLATFORM.c.name == INSTALLED_AT)
        ).first()
    if known is None:
        # Two pods starting together: one inserts, the other finds the row taken; either way it is there.
        with contextlib.suppress(sqlalchemy.exc.IntegrityError), engine.begin() as conn:
            conn.execute(PLATFORM.insert().values(name=INSTALLED_AT, value=f"{time.time():.3f}"))


def record_user_change(engine: sqlalchemy.engine.Engine, username: str) -> None:
    """Log that `username`'s credentials or rights changed: every server forgets its cached login."""
    with engine.begin() as conn:
        conn.execute(USER_CHANGES.insert().values(username=username))


def _fingerprint(password: str) -> str:
    """What the database keeps of an applied admin password: enough to recognise it, nothing to use."""
    return hmac.new(password.encode(), b"mlflow-aks admin password applied", hashlib.sha256).hexdigest()


def _applied(engine: sqlalchemy.engine.Engine) -> str | None:
    with engine.begin() as conn:
        return conn.execute(
            sqlalchemy.select(PLATFORM.c.value).where(PLATFORM.c.name == ADMIN_PASSWORD_APPLIED)
        ).scalar()


def _record_applied(engine: sqlalchemy.engine.Engine, fingerprint: str) -> None:
    with engine.begin() as conn:
        conn.execute(PLATFORM.delete().where(PLATFORM.c.name == ADMIN_PASSWORD_APPLIED))
        conn.execute(PLATFORM.insert().values(name=ADMIN_PASSWORD_APPLIED, value=fingerprint))


def ensure_admin(auth_uri: str, username: str, password: str) -> str:
    """The admin exists; it takes the stack's password unless that password was already applied here.

    Returns what was done: "created", "aligned" (the database had another stack's password, or one from
    before this record existed) or "kept" (the stack's password was applied before: a password the admin
    has changed since stays).
    """
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    store = SqlAlchemyStore()
    store.init_db(auth_uri)
    try:
        ensure_platform_tables(store.engine)
        fingerprint = _fingerprint(password)
        applied = _applied(store.engine)
        if not store.has_user(username, use_primary=True):
            store.create_user(username, password, is_admin=True)
            outcome = "created"
        elif applied != fingerprint:
            store.update_user(username, password=password, is_admin=True)
            record_user_change(store.engine, username)
            outcome = "aligned"
        else:
            outcome = "kept"
        if applied != fingerprint:
            _record_applied(store.engine, fingerprint)
        log.info(
            {
                "created": "created the admin user %r with the stack's admin password",
                "aligned": "set the admin user %r to the stack's admin password (first start with it)",
                "kept": "kept the admin user %r's password (the stack's was applied before)",
            }[outcome],
            username,
        )
        return outcome
    finally:
        store.engine.dispose()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "command",
        nargs="?",
        default="migrate",
        choices=["migrate", "backup-before", "rollback-guard"],
        help="migrate (the init container, default), backup-before (the pre-migration Job), "
        "rollback-guard (Helm's pre-rollback hook)",
    )
    command = parser.parse_args(sys.argv[1:] if argv is None else argv).command
    tracking_uri = os.environ.get("MLFLOW_BACKEND_STORE_URI")
    if not tracking_uri:
        print("migrate: MLFLOW_BACKEND_STORE_URI is not set", file=sys.stderr)
        return 2
    auth_uri = _auth_uri()
    sign_in_uri = os.environ.get(SIGN_IN_DB_ENV)
    if command == "backup-before":
        return backup_before(tracking_uri, auth_uri, sign_in_uri)
    if command == "rollback-guard":
        return rollback_guard(tracking_uri, auth_uri, sign_in_uri)

    from mlflow.db import upgrade as upgrade_tracking_db
    from mlflow.server.auth.config import read_auth_config
    from mlflow.server.auth.db.cli import upgrade as upgrade_auth_db

    auth_uri = read_auth_config().database_uri  # as the server reads it (a packaged default included)
    for uri in (tracking_uri, auth_uri, sign_in_uri):  # each one there, or the way out (a restore)
        if uri:
            _require_database(uri)
    with migration_lock(tracking_uri):
        record = None
        states = schemas(tracking_uri, auth_uri, sign_in_uri)
        if pending := [s.describe() for s in states if s.pending]:
            if os.environ.get(BACKUP_MODE_ENV) == MANAGED_BACKUPS:
                restore_point_before_migrating(pending)
            else:
                record = await_backup(states, auth_uri)
        log.info("migrating the tracking database")
        upgrade_tracking_db.main([tracking_uri], standalone_mode=False)
        if created := ensure_tracking_indexes(tracking_uri):
            log.info("created the tracking database's indexes %s", ", ".join(created))
        log.info("migrating the basic-auth database")
        upgrade_auth_db.main(["--url", auth_uri], standalone_mode=False)
        engine = sqlalchemy.create_engine(auth_uri, poolclass=sqlalchemy.pool.NullPool)
        try:
            ensure_platform_tables(engine)
        finally:
            engine.dispose()
        if sign_in_uri:
            from mlflow_oidc_auth.db import utils as sign_in_db

            log.info("migrating the sign-in database")
            engine = sqlalchemy.create_engine(sign_in_uri, poolclass=sqlalchemy.pool.NullPool)
            try:
                sign_in_db.migrate(engine, "head")
            finally:
                engine.dispose()
        if record:  # done with: a restore of that backup must never be migrated again unbacked
            _record(auth_uri, record, None)
        admin, admin_password = (
            os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME"),
            os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"),
        )
        if admin and admin_password:
            ensure_admin(auth_uri, admin, admin_password)
        run_user, run_password = os.environ.get("MLFLOW_RUN_USERNAME"), os.environ.get("MLFLOW_RUN_PASSWORD")
        if run_user and run_password:
            ensure_run_user(auth_uri, run_user, run_password)
        if os.environ.get(kek.PASSPHRASE_ENV):
            kek.rewrap(tracking_uri)
    log.info("schema migration done")
    return 0


def _auth_uri() -> str | None:
    """The basic-auth database, from the file at MLFLOW_AUTH_CONFIG_PATH (as the server reads it)."""
    path = os.environ.get("MLFLOW_AUTH_CONFIG_PATH")
    if not path:
        return None
    parser = configparser.ConfigParser()
    parser.read(path)
    return parser["mlflow"]["database_uri"]


if __name__ == "__main__":
    sys.exit(main())
