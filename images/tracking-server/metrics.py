"""Prometheus metrics of the tracking server, on a port of their own that no Service exposes.

serve.py wraps MLflow's ASGI app with `instrument()` in each serving process and starts `serve()` once,
in the process that binds the server's socket. The metrics are:

- `mlflow_http_requests_total{method, endpoint, status}`: requests answered;
- `mlflow_http_request_duration_seconds{method, endpoint}`: time to the last byte of the answer;
- `mlflow_http_requests_in_flight`: requests being answered now.

`endpoint` is the route, never the raw path: MLflow's REST and UI routes as the server declares them,
the artifact routes with their path folded to `{path}`, and anything else `other`, so a client cannot
create new time series by requesting odd URLs. Values are kept in prometheus_client's multi-process
mode (files under PROMETHEUS_MULTIPROC_DIR in the scratch volume), so several uvicorn workers add up
into one answer. The readiness endpoint and /health are counted too (the kubelet's calls show there).

What the alerts need besides (alerts/rules.yaml), read at each scrape by the process that answers it:

- from the user database's `mlflow_aks_platform` table, where backup.py records each backup's and
  binary-log shipment's success or failure and migrate.py the installation (`PLATFORM_GAUGES`):
  `mlflow_aks_last_backup_success_timestamp_seconds` and the others, absent until first recorded;
- with the public endpoint, `mlflow_aks_tls_certificate_expiry_timestamp_seconds`: the notAfter of the
  certificate the pod's TLS terminator serves, read by a TLS handshake with it (MLFLOW_AKS_TLS_PROBE_*),
  so it is the certificate clients get, whoever renewed it; absent while none is served.
"""

from __future__ import annotations

import configparser
import logging
import os
import re
import socket
import ssl
import tempfile
import time
from typing import Any

import backup  # beside this file (/app in the image): the status names it records

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
AUTH_CONFIG_ENV = "MLFLOW_AUTH_CONFIG_PATH"
# host:port of the pod's TLS terminator and the name it serves (the chart sets them with exposure public).
TLS_PROBE_ADDRESS_ENV = "MLFLOW_AKS_TLS_PROBE_ADDRESS"
TLS_PROBE_NAME_ENV = "MLFLOW_AKS_TLS_PROBE_NAME"
# Status row -> (gauge, help).
PLATFORM_GAUGES = {
    backup.BACKUP_SUCCESS: (
        "mlflow_aks_last_backup_success_timestamp_seconds",
        "When the last backup of the databases completed (Unix time).",
    ),
    backup.BACKUP_FAILURE: (
        "mlflow_aks_last_backup_failure_timestamp_seconds",
        "When the last backup attempt failed (Unix time).",
    ),
    backup.BINLOGS_SUCCESS: (
        "mlflow_aks_last_binlog_shipment_success_timestamp_seconds",
        "When MySQL's binary logs were last shipped to the backups (Unix time).",
    ),
    backup.BINLOGS_FAILURE: (
        "mlflow_aks_last_binlog_shipment_failure_timestamp_seconds",
        "When a binary-log shipment last failed (Unix time).",
    ),
    backup.BINLOGS_INTERVAL: (
        "mlflow_aks_binlog_ship_interval_seconds",
        "Seconds between two scheduled binary-log shipments.",
    ),
    backup.INSTALLED_AT: (
        "mlflow_aks_platform_installed_timestamp_seconds",
        "When the platform first ran on this database (Unix time).",
    ),
}
log = logging.getLogger("mlflow_aks")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Routes whose tail is a free-form path: the label keeps the route and folds the path.
_PATH_ROUTES = re.compile(
    r"^(?P<route>/(?:ajax-)?api/[0-9.]+/mlflow-artifacts/(?:artifacts|mpu/(?:create|complete|abort)))/.+$"
)
_STATIC = re.compile(r"^/static-files/.+$")


def prepare_multiprocess_dir() -> None:
    """Before any worker starts: a fresh directory for the workers' metric files (in the scratch volume)."""
    if not os.environ.get(MULTIPROC_ENV):
        os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="prometheus-")


def known_routes() -> set[str]:
    """The REST and UI routes MLflow's app declares (Flask rules without variables)."""
    from mlflow.server import app as flask_app

    return {rule.rule for rule in flask_app.url_map.iter_rules() if "<" not in rule.rule}


def endpoint_label(path: str, known: set[str]) -> str:
    if path in known or path in ("/health", "/version", "/", "/_mlflow_aks/ready", "/server-info"):
        return path
    if match := _PATH_ROUTES.match(path):
        return match["route"] + "/{path}"
    if _STATIC.match(path):
        return "/static-files/{path}"
    return "other"


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.requests = Counter(
            "mlflow_http_requests",
            "Requests answered by the tracking server.",
            ["method", "endpoint", "status"],
        )
        self.duration = Histogram(
            "mlflow_http_request_duration_seconds",
            "Time from a request's arrival to the last byte of its answer.",
            ["method", "endpoint"],
            buckets=BUCKETS,
        )
        self.in_flight = Gauge(
            "mlflow_http_requests_in_flight", "Requests being answered now.", multiprocess_mode="livesum"
        )


def instrument(app: Any) -> Any:
    """`app` (ASGI), counting each HTTP request by method, endpoint and status."""
    metrics = _Metrics()
    known: set[str] | None = None

    async def instrumented(scope, receive, send):
        nonlocal known
        if scope["type"] != "http":
            return await app(scope, receive, send)
        if known is None:
            known = known_routes()
        method, endpoint = scope["method"], endpoint_label(scope["path"], known)
        status = {"code": 500}

        async def send_and_record(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        started = time.perf_counter()
        metrics.in_flight.inc()
        try:
            await app(scope, receive, send_and_record)
        finally:
            metrics.in_flight.dec()
            metrics.duration.labels(method, endpoint).observe(time.perf_counter() - started)
            metrics.requests.labels(method, endpoint, str(status["code"])).inc()

    return instrumented


class PlatformStatus:
    """Collector of PLATFORM_GAUGES, read from the status table at each scrape."""

    def __init__(self, database_uri: str):
        self.database_uri = database_uri
        self._engine = None

    def _rows(self) -> dict[str, str]:
        import sqlalchemy

        if self._engine is None:
            self._engine = sqlalchemy.create_engine(
                self.database_uri, pool_size=1, max_overflow=0, pool_pre_ping=True, pool_recycle=300
            )
        table = sqlalchemy.table(backup.STATUS_TABLE, sqlalchemy.column("name"), sqlalchemy.column("value"))
        with self._engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.select(table.c.name, table.c.value).where(table.c.name.in_(list(PLATFORM_GAUGES)))
            ).all()
        return {name: value for name, value in rows}

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        try:
            rows = self._rows()
        except Exception as error:  # the database is away: no gauges this scrape (the server's own alert)
            log.warning("platform status: %s: %s", type(error).__name__, error)
            return
        for name, (gauge, help_text) in PLATFORM_GAUGES.items():
            try:
                value = float(rows[name])
            except (KeyError, ValueError):
                continue
            yield GaugeMetricFamily(gauge, help_text, value=value)


def served_certificate_expiry(address: str, server_name: str, timeout: float = 5.0) -> float | None:
    """notAfter (Unix time) of the certificate served at `address` (host:port) for `server_name`, or None
    when none is (no listener, no certificate yet). Not verified: the question is when it expires."""
    from cryptography import x509

    host, _, port = address.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, int(port)), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
    return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp() if der else None


class ServedCertificate:
    """Collector of `mlflow_aks_tls_certificate_expiry_timestamp_seconds`."""

    def __init__(self, address: str, server_name: str):
        self.address, self.server_name = address, server_name

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        expiry = served_certificate_expiry(self.address, self.server_name)
        if expiry is not None:
            yield GaugeMetricFamily(
                "mlflow_aks_tls_certificate_expiry_timestamp_seconds",
                "When the certificate the public endpoint serves expires (Unix time).",
                value=expiry,
            )


def auth_database_uri(environ: dict[str, str] | None = None) -> str | None:
    """The user database's URI, from the server's basic_auth.ini (None without one)."""
    path = (os.environ if environ is None else environ).get(AUTH_CONFIG_ENV)
    if not path:
        return None
    parser = configparser.ConfigParser()
    parser.read(path)
    return parser.get("mlflow", "database_uri", fallback=None)


def serve(port: int, host: str) -> None:
    """Start the metrics endpoint (a daemon thread) answering for every worker's values, the platform's
    status and, with the public endpoint, its certificate."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    if database_uri := auth_database_uri():
        registry.register(PlatformStatus(database_uri))
    if (address := os.environ.get(TLS_PROBE_ADDRESS_ENV)) and (name := os.environ.get(TLS_PROBE_NAME_ENV)):
        registry.register(ServedCertificate(address, name))
    start_http_server(port, addr=host, registry=registry)
