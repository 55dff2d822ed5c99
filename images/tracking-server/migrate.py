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

Before migrating existing data (either database's revision differs from this image's head), it takes a
backup with backup.py to MLFLOW_AKS_BACKUP_DESTINATION. MLflow's migrations are not transactional, and
MLflow's upgrade notes say to back up first. When the backup fails, or no destination is configured, it
refuses to migrate, and the pod does not start. A new, empty database needs no backup.

With MLFLOW_AKS_BACKUP_MODE=managed (an Azure Database for MySQL flexible server, whose point-in-time
restore is the backup), it logs the UTC time just before migrating and the `az mysql flexible-server
restore` command that brings the server back to it (MLFLOW_AKS_DATABASE_SERVER, _RESOURCE_GROUP), then
migrates.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import hmac
import logging
import os
import sys
import time
from collections.abc import Iterator

import sqlalchemy

LOCK_NAME = "mlflow_schema_migration"
LOCK_TIMEOUT_SECONDS = 900
CONNECT_DEADLINE_SECONDS = 300

log = logging.getLogger("migrate")


def _connect_with_retry(engine: sqlalchemy.engine.Engine) -> sqlalchemy.engine.Connection:
    """The database may still be starting (fresh install): retry for a while, then fail loudly."""
    deadline = time.monotonic() + CONNECT_DEADLINE_SECONDS
    while True:
        try:
            return engine.connect()
        except sqlalchemy.exc.OperationalError as e:
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


def _sign_in_head(uri: str) -> str:
    from alembic.script import ScriptDirectory
    from mlflow_oidc_auth.db import utils as sign_in_db

    return ScriptDirectory.from_config(sign_in_db._get_alembic_config(uri)).get_current_head()


def pending_migrations(tracking_uri: str, auth_uri: str, sign_in_uri: str | None = None) -> list[str]:
    """Which existing databases this image would migrate: `<database>: <revision> -> <head>`."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from mlflow.server.auth.db import utils as auth_db
    from mlflow.store.db.utils import _get_latest_schema_revision

    databases = [
        ("tracking database", tracking_uri, "alembic_version", _get_latest_schema_revision),
        (
            "user database",
            auth_uri,
            "alembic_version_auth",
            lambda: ScriptDirectory.from_config(auth_db._get_alembic_config(auth_uri)).get_current_head(),
        ),
    ]
    if sign_in_uri:
        databases.append(
            ("sign-in database", sign_in_uri, SIGN_IN_VERSION_TABLE, lambda: _sign_in_head(sign_in_uri))
        )
    pending = []
    for name, uri, version_table, head in databases:
        engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
        try:
            tables = set(sqlalchemy.inspect(engine).get_table_names())
            if not tables - {version_table}:
                continue  # a new database: nothing in it to lose
            with engine.connect() as conn:
                current = MigrationContext.configure(
                    conn, opts={"version_table": version_table}
                ).get_current_revision()
        finally:
            engine.dispose()
        if current != head():
            pending.append(f"{name}: {current or 'unversioned'} -> {head()}")
    return pending


def backup_before_migrating(pending: list[str]) -> None:
    """Back up both databases, or stop: the migration must not start without a backup."""
    import backup  # beside this file (/app in the image)

    destination = os.environ.get(backup.DESTINATION_ENV)
    if not destination:
        raise SystemExit(
            f"migrate: refusing to migrate existing data ({'; '.join(pending)}) without a backup: "
            f"{backup.DESTINATION_ENV} is not set"
        )
    log.info("backing up before migrating (%s)", "; ".join(pending))
    try:
        taken = backup.take(
            backup.Destination(destination, dict(os.environ)),
            backup.databases(dict(os.environ)),
            "pre-migration",
        )
    except Exception as error:
        raise SystemExit(f"migrate: refusing to migrate: the backup before it failed: {error}") from error
    log.info("backup %s taken (%s rows, %s bytes)", taken["name"], taken["rows"], taken["bytes"])


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


def ensure_platform_tables(engine: sqlalchemy.engine.Engine) -> None:
    PLATFORM_METADATA.create_all(engine, checkfirst=True)


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


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from mlflow.db import upgrade as upgrade_tracking_db
    from mlflow.server.auth.config import read_auth_config
    from mlflow.server.auth.db.cli import upgrade as upgrade_auth_db

    tracking_uri = os.environ.get("MLFLOW_BACKEND_STORE_URI")
    if not tracking_uri:
        print("migrate: MLFLOW_BACKEND_STORE_URI is not set", file=sys.stderr)
        return 2
    auth_uri = read_auth_config().database_uri
    sign_in_uri = os.environ.get(SIGN_IN_DB_ENV)

    with migration_lock(tracking_uri):
        if pending := pending_migrations(tracking_uri, auth_uri, sign_in_uri):
            if os.environ.get(BACKUP_MODE_ENV) == MANAGED_BACKUPS:
                restore_point_before_migrating(pending)
            else:
                backup_before_migrating(pending)
        log.info("migrating the tracking database")
        upgrade_tracking_db.main([tracking_uri], standalone_mode=False)
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
        admin, admin_password = (
            os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME"),
            os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD"),
        )
        if admin and admin_password:
            ensure_admin(auth_uri, admin, admin_password)
        run_user, run_password = os.environ.get("MLFLOW_RUN_USERNAME"), os.environ.get("MLFLOW_RUN_PASSWORD")
        if run_user and run_password:
            ensure_run_user(auth_uri, run_user, run_password)
    log.info("schema migration done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
