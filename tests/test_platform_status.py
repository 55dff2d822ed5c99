"""What the alerts read from the platform itself: backups and binary-log shipments record their success
or failure in the status table (backup.py), the installation its time (migrate.py), and the tracking
server exposes them, and the served certificate's expiry, as gauges (metrics.py); the chart wires the
binlog interval and the certificate probe. The e2e test (tests/e2e/test_alerts_e2e.py) runs the same code
against MariaDB and a real Prometheus."""

from __future__ import annotations

import datetime
import socket
import ssl
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import sqlalchemy

from components import chart_values
from components.chart_values import setup_values
from tests import chart_render as cr

IMAGE = cr.REPO_ROOT / "images" / "tracking-server"


@pytest.fixture(scope="module")
def image_modules():
    sys.path.insert(0, str(IMAGE))
    try:
        import backup
        import metrics
        import migrate

        yield backup, metrics, migrate
    finally:
        sys.path.remove(str(IMAGE))


class FakeConnection:
    """pymysql's connection as backup.py uses it: statements logged, SELECTs answered with `rows`."""

    def __init__(self, log: list, rows: list | None = None):
        self.log, self.rows = log, rows or []

    def cursor(self):
        log, rows = self.log, self.rows

        class Cursor:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def execute(self, sql, params=None):
                log.append((" ".join(sql.split()), params))

            def fetchall(self):
                return list(rows)

        return Cursor()

    def close(self):
        self.log.append(("closed", None))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    ini = tmp_path / "basic_auth.ini"
    ini.write_text("[mlflow]\ndatabase_uri = mysql+pymysql://mlflow:pw@db:3306/mlflow_auth\n")
    return {
        "MLFLOW_AKS_BACKUP_DESTINATION": "wasbs://backups@account.blob.core.windows.net/mysql",
        "MLFLOW_BACKEND_STORE_URI": "mysql+pymysql://mlflow:pw@db:3306/mlflow",
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
    }


@pytest.fixture
def recorded(image_modules, monkeypatch) -> list:
    backup, _, _ = image_modules
    log: list = []
    connected: list = []

    def fake_connect(database, **options):
        connected.append((database.role, database.name, options.get("autocommit")))
        return FakeConnection(log)

    monkeypatch.setattr(backup, "connect", fake_connect)
    monkeypatch.setattr(backup, "Destination", lambda uri, environ: object())
    monkeypatch.setattr(backup.time, "time", lambda: 1_765_000_000.25)
    log.append(("connections", connected))
    return log


def _writes(log: list) -> dict[str, str]:
    upsert = "INSERT INTO `mlflow_auth`.`mlflow_aks_platform` (name, value) VALUES (%s, %s) ON DUPLICATE KEY"
    written = {}
    for sql, params in log[1:]:
        if sql != "closed" and not sql.startswith("SELECT"):
            assert sql.startswith(upsert), sql
            written[params[0]] = params[1]
    return written


def test_a_backup_records_when_it_succeeded_in_the_user_database(image_modules, recorded, env, monkeypatch):
    backup, _, _ = image_modules
    monkeypatch.setattr(backup, "take", lambda destination, targets, reason: {"name": "b", "reason": reason})
    assert backup.main(["backup", "--reason", "scheduled"], env) == 0
    assert _writes(recorded) == {backup.BACKUP_SUCCESS: "1765000000.250"}
    assert recorded[0][1] == [("auth", "mlflow_auth", True)]


def test_a_failed_backup_records_its_failure_and_still_fails(image_modules, recorded, env, monkeypatch):
    backup, _, _ = image_modules

    def fail(destination, targets, reason):
        raise backup.BackupError("the blob store said no")

    monkeypatch.setattr(backup, "take", fail)
    assert backup.main(["backup"], env) == 1
    assert _writes(recorded) == {backup.BACKUP_FAILURE: "1765000000.250"}


def test_a_shipment_records_its_success_and_the_schedules_interval(image_modules, recorded, env, monkeypatch):
    backup, _, _ = image_modules
    monkeypatch.setattr(backup, "binlogs_upload", lambda destination, directory: {"shipped": []})
    env = {**env, backup.BINLOGS_INTERVAL_ENV: "300"}
    assert backup.main(["binlogs", "upload", "/ship"], env) == 0
    assert _writes(recorded) == {backup.BINLOGS_SUCCESS: "1765000000.250", backup.BINLOGS_INTERVAL: "300"}


def test_a_failed_shipment_plan_records_a_failure(image_modules, recorded, env, monkeypatch):
    backup, _, _ = image_modules

    def fail(destination, targets, directory, secrets):
        raise backup.BackupError("the database server writes no binary logs")

    monkeypatch.setattr(backup, "binlogs_plan", fail)
    assert backup.main(["binlogs", "plan", "/ship", "--secrets", "/s"], env) == 1
    assert _writes(recorded) == {backup.BINLOGS_FAILURE: "1765000000.250"}


def test_a_status_the_database_cannot_take_does_not_fail_the_backup(image_modules, env, monkeypatch, capsys):
    backup, _, _ = image_modules

    def unreachable(database, **options):
        raise backup.BackupError("cannot reach the database server")

    monkeypatch.setattr(backup, "connect", unreachable)
    monkeypatch.setattr(backup, "Destination", lambda uri, environ: object())
    monkeypatch.setattr(backup, "take", lambda destination, targets, reason: {"name": "b"})
    assert backup.main(["backup"], env) == 0
    assert f"could not record {backup.BACKUP_SUCCESS}" in capsys.readouterr().err


@pytest.mark.parametrize("post_restore_backup", [None, "mlflow-20261202T120000000000Z-post-restore.sql.gz"])
def test_a_restore_keeps_the_record_of_backups_the_restored_data_would_roll_back(
    image_modules, env, monkeypatch, post_restore_backup
):
    """The restored user database holds the status rows of its backup's time; what happened to backups
    since (and the installation) is written back, and a post-restore backup counts as a good backup."""
    backup, _, _ = image_modules
    log: list = []
    before = [(backup.BACKUP_SUCCESS, "1764990000.000"), (backup.INSTALLED_AT, "1700000000.000")]
    monkeypatch.setattr(backup, "connect", lambda database, **options: FakeConnection(log, before))
    monkeypatch.setattr(backup, "Destination", lambda uri, environ: object())
    monkeypatch.setattr(backup.time, "time", lambda: 1_765_000_000.25)
    monkeypatch.setattr(
        backup, "restore", lambda *a, **k: {"restored": "b", "post_restore_backup": post_restore_backup}
    )
    assert backup.main(["restore", "latest"], env) == 0
    [select] = [params for sql, params in log if sql.startswith("SELECT")]
    assert set(select) == set(backup.STATUS_NAMES)
    expected_success = "1765000000.250" if post_restore_backup else "1764990000.000"
    assert _writes([None, *log]) == {
        backup.BACKUP_SUCCESS: expected_success,
        backup.INSTALLED_AT: "1700000000.000",
    }


def test_a_dry_run_restore_writes_nothing(image_modules, env, monkeypatch):
    backup, _, _ = image_modules
    log: list = []
    monkeypatch.setattr(backup, "connect", lambda database, **options: FakeConnection(log))
    monkeypatch.setattr(backup, "Destination", lambda uri, environ: object())
    monkeypatch.setattr(backup, "restore", lambda *a, **k: {"restored": "b", "dry_run": True})
    assert backup.main(["restore", "latest", "--dry-run"], env) == 0
    assert log == []


def _status_database(tmp_path: Path, migrate, rows: dict[str, str]) -> str:
    uri = f"sqlite:///{tmp_path / 'auth.db'}"
    engine = sqlalchemy.create_engine(uri)
    migrate.PLATFORM_METADATA.create_all(engine)
    with engine.begin() as conn:
        for name, value in rows.items():
            conn.execute(migrate.PLATFORM.insert().values(name=name, value=value))
    engine.dispose()
    return uri


def test_the_server_exposes_each_recorded_status_as_a_gauge(image_modules, tmp_path):
    backup, metrics, migrate = image_modules
    uri = _status_database(
        tmp_path,
        migrate,
        {
            backup.BACKUP_SUCCESS: "1765000000.5",
            backup.BINLOGS_INTERVAL: "300",
            migrate.ADMIN_PASSWORD_APPLIED: "not a number, not a metric",
        },
    )
    families = {f.name: f.samples[0].value for f in metrics.PlatformStatus(uri).collect()}
    assert families == {
        "mlflow_aks_last_backup_success_timestamp_seconds": 1765000000.5,
        "mlflow_aks_binlog_ship_interval_seconds": 300.0,
    }


def test_an_unreachable_database_leaves_the_gauges_out(image_modules, tmp_path):
    _, metrics, _ = image_modules
    assert list(metrics.PlatformStatus(f"sqlite:///{tmp_path / 'missing' / 'auth.db'}").collect()) == []


def test_the_installation_time_is_recorded_once(image_modules, tmp_path, monkeypatch):
    _, metrics, migrate = image_modules
    uri = f"sqlite:///{tmp_path / 'auth.db'}"
    engine = sqlalchemy.create_engine(uri)
    monkeypatch.setattr(migrate.time, "time", lambda: 1000.0)
    migrate.ensure_platform_tables(engine)
    monkeypatch.setattr(migrate.time, "time", lambda: 2000.0)
    migrate.ensure_platform_tables(engine)
    engine.dispose()
    families = {f.name: f.samples[0].value for f in metrics.PlatformStatus(uri).collect()}
    assert families == {"mlflow_aks_platform_installed_timestamp_seconds": 1000.0}


def _self_signed(tmp_path: Path, name: str, not_after: datetime.datetime) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - datetime.timedelta(days=90))
        .not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert, key_file


def test_the_served_certificates_expiry_is_read_by_a_handshake(image_modules, tmp_path):
    _, metrics, _ = image_modules
    not_after = datetime.datetime(2027, 1, 15, 8, 30, tzinfo=datetime.UTC)
    cert, key = _self_signed(tmp_path, "mlflow.example.test", not_after)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_once():
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    server = threading.Thread(target=serve_once, daemon=True)
    server.start()
    collector = metrics.ServedCertificate(f"127.0.0.1:{port}", "mlflow.example.test")
    [family] = list(collector.collect())
    server.join(timeout=5)
    listener.close()
    assert family.name == "mlflow_aks_tls_certificate_expiry_timestamp_seconds"
    assert family.samples[0].value == not_after.timestamp()
    # Nothing listening (the terminator not started, or no certificate yet): no gauge, no error.
    assert list(metrics.ServedCertificate(f"127.0.0.1:{port}", "mlflow.example.test").collect()) == []


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_the_binlog_job_records_the_interval_pulumi_schedules(helm_bin, tmp_path):
    ctx = replace(cr.SETUP_CONTEXTS["private"], binlog_ship_minutes=15)
    objects = cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, setup_values(ctx), tmp_path)
    [shipping] = [
        o
        for o in cr.of_kind(objects, "CronJob")
        if o["metadata"]["labels"]["app.kubernetes.io/component"] == "binlogs"
    ]
    pod = shipping["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    upload = next(c for c in [*pod.get("initContainers", []), *pod["containers"]] if c["name"] == "upload")
    assert shipping["spec"]["schedule"] == "*/15 * * * *"
    assert _env(upload)["MLFLOW_AKS_BINLOG_SHIP_SECONDS"] == "900"


@pytest.mark.parametrize("exposure", ["private", "public-one-range"])
def test_a_public_servers_metrics_read_the_certificate_its_terminator_serves(helm_bin, tmp_path, exposure):
    objects = cr.render(
        helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, setup_values(cr.SETUP_CONTEXTS[exposure]), tmp_path
    )
    pod = cr.one(objects, "Deployment", chart_values.TRACKING_SERVICE)["spec"]["template"]["spec"]
    mlflow = next(c for c in pod["containers"] if c["name"] == "mlflow")
    env = _env(mlflow)
    if exposure == "private":
        assert "MLFLOW_AKS_TLS_PROBE_ADDRESS" not in env
        return
    tls = next(c for c in pod["containers"] if c["name"] == "tls")
    https_port = next(p["containerPort"] for p in tls["ports"] if p["name"] == "tls-https")
    assert env["MLFLOW_AKS_TLS_PROBE_ADDRESS"] == f"127.0.0.1:{https_port}"
    assert env["MLFLOW_AKS_TLS_PROBE_NAME"] == _env(tls)["MLFLOW_AKS_HOSTNAME"] == cr.PUBLIC_HOSTNAME
