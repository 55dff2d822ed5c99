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
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from typing import Any

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
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


def serve(port: int, host: str) -> None:
    """Start the metrics endpoint (a daemon thread) answering for every worker's values."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    start_http_server(port, addr=host, registry=registry)
