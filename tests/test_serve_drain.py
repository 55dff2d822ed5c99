"""serve.py's drain on SIGTERM (change 13, issue 18.5), in process and in milliseconds.

The first exit signal leaves uvicorn serving for MLFLOW_AKS_DRAIN_SECONDS with `Connection: close` on every
answer, then lets uvicorn shut down with MLFLOW_AKS_GRACEFUL_SHUTDOWN_SECONDS for the requests in flight.
tests/e2e/test_rollouts_e2e.py stops real servers that way behind a balancer.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
import uvicorn
import uvicorn.server
from mlflow.store.artifact import artifact_repository_registry

from tests import image_modules


def _run(coro):
    """asyncio.run without its side effect on the main thread's event loop, which it leaves unset: the
    Pulumi program runs of later tests in this process need it."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@pytest.fixture
def serve(monkeypatch):
    """A fresh serve.py (its own drain state); uvicorn's Server class restored after the test."""
    monkeypatch.setattr(uvicorn.server.Server, "handle_exit", uvicorn.server.Server.handle_exit)
    monkeypatch.setattr(uvicorn.server.Server, "startup", uvicorn.server.Server.startup)
    # The worker's startup also registers change 16's opener of `mlflow-artifacts:` URIs: MLflow's after.
    registry = artifact_repository_registry._artifact_repository_registry._registry
    monkeypatch.setitem(registry, "mlflow-artifacts", registry["mlflow-artifacts"])
    return image_modules.load(monkeypatch, "serve")


async def _answer(app, scope_type: str = "http") -> list[dict]:
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app({"type": scope_type}, receive, send)
    return sent


async def _ok(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"connection", b"keep-alive")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_answers_close_their_connection_only_while_draining(serve):
    app = serve.with_drain(_ok, serve._draining)
    before = _run(_answer(app))
    assert before[0]["headers"] == [(b"connection", b"keep-alive")]
    serve._draining.set()
    during = _run(_answer(app))
    assert during[0]["headers"] == [(b"connection", b"close")]
    assert during[1] == before[1]  # the body is untouched


def test_first_signal_drains_then_uvicorn_stops_and_a_second_stops_at_once(serve):
    serve._drain_on_exit_signal(0.3)
    server = uvicorn.Server(uvicorn.Config(_ok))
    server.handle_exit(signal.SIGTERM, None)
    assert serve._draining.is_set()
    assert not server.should_exit  # still serving
    started = time.monotonic()
    while not server.should_exit and time.monotonic() - started < 5:
        time.sleep(0.01)
    assert 0.25 <= time.monotonic() - started < 2

    again = uvicorn.Server(uvicorn.Config(_ok))
    again.handle_exit(signal.SIGTERM, None)  # this process already drains: a second signal stops at once
    assert again.should_exit


@pytest.mark.parametrize("chart_env", [True, False])
def test_each_serving_process_takes_its_settings_from_the_chart_env(serve, monkeypatch, chart_env):
    """uvicorn's startup, as serve.py patches it, with the env the chart renders (or none of it)."""
    for name in (
        serve.READINESS_KEY_ENV,
        serve.METRICS_PORT_ENV,
        serve.DRAIN_SECONDS_ENV,
        serve.GRACEFUL_SHUTDOWN_SECONDS_ENV,
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(serve.STREAM_ARTIFACTS, "false")
    # Nor the store's and endpoints' patches (changes 14, 15), which would stay in MLflow's app for every
    # later test of this process (tests/test_fast_store.py and tests/test_fast_metrics.py install them).
    monkeypatch.setenv(serve.FAST_STORE, "false")
    monkeypatch.setenv(serve.FAST_METRICS, "false")
    monkeypatch.setenv(serve._AUTH_APP, serve.OIDC_APP)  # no basic-auth patches; no issuer: no group gate
    if chart_env:
        monkeypatch.setenv(serve.DRAIN_SECONDS_ENV, "15")
        monkeypatch.setenv(serve.GRACEFUL_SHUTDOWN_SECONDS_ENV, "512")

    async def started(self, sockets=None):  # uvicorn's own startup (sockets, lifespan) is not the point
        return None

    monkeypatch.setattr(uvicorn.server.Server, "startup", started)
    serve._patch_uvicorn_worker()
    config = uvicorn.Config(_ok)
    config.loaded_app = _ok
    server = uvicorn.Server(config)
    _run(server.startup())
    assert getattr(uvicorn.server.Server.handle_exit, "_mlflow_aks_drain", False) is chart_env
    assert server.config.timeout_graceful_shutdown == (512 if chart_env else None)
    assert (server.config.loaded_app is _ok) is not chart_env
