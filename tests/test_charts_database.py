"""charts/mlflow_setup with `database: flexibleServer` (components/database_server.py): no MySQL in the
cluster, no backup CronJob; the tracking server, its migration and the gc Job reach the flexible server over
TLS that verifies its certificate and name; the migration relies on Azure's point-in-time restore. The
in-cluster MySQL contexts render as before (no TLS options, a backup before migrating)."""

from __future__ import annotations

import ssl
import urllib.parse

import pymysql
import pytest
import sqlalchemy
from sqlalchemy.engine import make_url

from components import chart_values
from components.chart_values import setup_values
from local.chart import deep_merge
from tests import chart_render as cr

FLEXIBLE = "private-flexible-server"
IN_CLUSTER = [name for name, ctx in cr.SETUP_CONTEXTS.items() if ctx.flexible_server is None]
SERVER = cr.FLEXIBLE_SERVER


@pytest.fixture(scope="module")
def renders(helm_bin, tmp_path_factory) -> dict[str, list[dict]]:
    scratch = tmp_path_factory.mktemp("database")
    return {
        name: cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, setup_values(ctx), scratch)
        for name, ctx in cr.SETUP_CONTEXTS.items()
    }


def tracking_secret(objects: list[dict]) -> dict[str, str]:
    return cr.secret_data(cr.one(objects, "Secret", f"{chart_values.FULLNAME}-tracking"))


def database_uris(objects: list[dict]) -> dict[str, str]:
    """The URIs the server, the migration and the Jobs read: tracking, basic-auth (from its ini file)."""
    data = tracking_secret(objects)
    auth = next(line for line in data["basic_auth.ini"].splitlines() if line.startswith("database_uri = "))
    return {
        "mlflow": data["backend-store-uri"],
        "mlflow_auth": auth.removeprefix("database_uri = ").replace("%%", "%"),
    }


def migrate_env(objects: list[dict]) -> dict[str, str | None]:
    deployment = cr.one(objects, "Deployment", chart_values.TRACKING_SERVICE)
    [migrate] = deployment["spec"]["template"]["spec"]["initContainers"]
    return {e["name"]: e.get("value") for e in migrate["env"]}


def test_with_a_flexible_server_there_is_no_mysql_disk_claim_or_backup_cronjob(renders):
    objects = renders[FLEXIBLE]
    assert cr.of_kind(objects, "StatefulSet") == []
    assert [
        o["metadata"]["name"] for o in objects if chart_values.MYSQL_FULLNAME in o["metadata"]["name"]
    ] == []
    assert [c["metadata"]["name"] for c in cr.of_kind(objects, "CronJob")] == [f"{chart_values.FULLNAME}-gc"]
    # The in-cluster contexts keep their MySQL and backups.
    for name in IN_CLUSTER:
        assert cr.one(renders[name], "StatefulSet", chart_values.MYSQL_FULLNAME), name
        assert {c["metadata"]["name"] for c in cr.of_kind(renders[name], "CronJob")} == {
            f"{chart_values.FULLNAME}-backup",
            f"{chart_values.FULLNAME}-gc",
            # Point-in-time recovery: the binary logs shipped, and the restore's (suspended) template.
            f"{chart_values.FULLNAME}-binlogs",
            f"{chart_values.FULLNAME}-point-in-time-restore",
        }


def test_every_uri_names_the_server_and_asks_for_verified_tls(renders):
    password = urllib.parse.quote_plus(SERVER.password)
    for database, uri in database_uris(renders[FLEXIBLE]).items():
        assert uri == (
            f"mysql+pymysql://{SERVER.user}:{password}@{SERVER.host}:3306/{database}"
            f"?ssl_ca={chart_values.SYSTEM_CA_BUNDLE}&ssl_check_hostname=true"
        )
    for name in IN_CLUSTER:
        for uri in database_uris(renders[name]).values():
            assert "?" not in uri and f"@{chart_values.MYSQL_FULLNAME}:3306/" in uri, name


def test_pymysql_requires_the_servers_certificate_and_name_from_that_uri(renders):
    """What SQLAlchemy hands PyMySQL for the chart's URI, and the TLS context PyMySQL builds from it (no
    connection made): a verified certificate from the CA bundle, checked against the host name."""
    uri = database_uris(renders[FLEXIBLE])["mlflow"]
    engine = sqlalchemy.create_engine(uri)
    _, options = engine.dialect.create_connect_args(make_url(uri))
    assert options["host"] == SERVER.host and options["password"] == SERVER.password
    assert options["ssl"] == {"ca": chart_values.SYSTEM_CA_BUNDLE, "check_hostname": True}
    connection = pymysql.connections.Connection(defer_connect=True, **options)
    assert connection.ssl and connection._ssl_required
    assert connection.ctx.verify_mode == ssl.CERT_REQUIRED and connection.ctx.check_hostname


def test_the_migration_relies_on_the_servers_restore_instead_of_a_backup(renders):
    env = migrate_env(renders[FLEXIBLE])
    assert env["MLFLOW_AKS_BACKUP_MODE"] == "managed"
    assert env["MLFLOW_AKS_DATABASE_SERVER"] == SERVER.server_name
    assert env["MLFLOW_AKS_DATABASE_RESOURCE_GROUP"] == SERVER.resource_group
    assert "MLFLOW_AKS_BACKUP_JOB" not in env
    for name in IN_CLUSTER:
        env = migrate_env(renders[name])
        assert env["MLFLOW_AKS_BACKUP_JOB"].startswith("mlflow-pre-migration-r"), name  # a backup first
        assert "MLFLOW_AKS_BACKUP_MODE" not in env, name


def test_the_servers_password_lives_in_the_tracking_secret_only(renders):
    objects = renders[FLEXIBLE]
    encoded = {SERVER.password, urllib.parse.quote_plus(SERVER.password)}
    for obj in objects:
        text = str(obj)
        if any(value in text for value in encoded):
            assert (obj["kind"], obj["metadata"]["name"]) == ("Secret", f"{chart_values.FULLNAME}-tracking")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # A flexible server with the bundled MySQL as well: two databases, one of them unused.
        ({"mysql": {"enabled": True}}, "mysql.enabled"),
        (
            {"externalDatabase": {"flexibleServer": {"name": "mlflow-mysql-x", "resourceGroup": ""}}},
            "resourceGroup",
        ),
        ({"externalDatabase": {"tls": {"caFile": "certs.pem"}}}, "caFile"),
        ({"externalDatabase": {"networkCidr": "0.0.0.0/0"}}, "networkCidr"),
        ({"externalDatabase": {"flexibleServer": {"name": "Not_A_Server"}}}, "name"),
    ],
)
def test_database_values_are_checked(helm_bin, tmp_path, change, message):
    values = deep_merge(setup_values(cr.SETUP_CONTEXTS[FLEXIBLE]), change)
    if change.get("mysql", {}).get("enabled"):
        values = deep_merge(
            setup_values(cr.SETUP_CONTEXTS["private"]), {"externalDatabase": values["externalDatabase"]}
        )
    result = cr.template(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, tmp_path)
    assert result.returncode != 0
    assert message in result.stderr
