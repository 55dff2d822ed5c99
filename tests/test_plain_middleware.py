"""serve.py's change 17: MLflow's three function middlewares (Starlette's `BaseHTTPMiddleware`: basic-auth's
permission check of FastAPI routes, the AI Gateway's timing, the workspace context) run as plain ASGI for a
request they would only hand on, and as MLflow wrote them for every other request.

Each test builds MLflow's own FastAPI app around a Flask app of its own (`create_fastapi_app`, then
basic-auth's `add_fastapi_permission_middleware`, as `mlflow server --app-name basic-auth` does), once as
MLflow has it and once with `plain_middlewares`, and sends both the same requests: every answer must be the
same (status, body, headers), and only the requests that would be handed on skip the middlewares.
"""

from __future__ import annotations

import pytest

from tests import image_modules

FLASK_PATH = "/ajax-api/2.0/mlflow/runs/search"
GATEWAY_PATH = "/gateway/chat/mlflow/invocations"
# A FastAPI route without a basic-auth validator (MLflow 3.17.2 has none): refused when failing closed.
UNVALIDATED_PATH = "/ajax-api/3.0/mlflow-aks-test/ping"
WORKSPACE_HEADER = "X-MLflow-Workspace"


def _apps(monkeypatch, plain: bool):
    """(MLflow's FastAPI app around a Flask app of this test, what its Flask view saw per request)."""
    import mlflow.server.auth as auth
    from fastapi.routing import APIRoute
    from flask import Flask, jsonify
    from mlflow.server.fastapi_app import create_fastapi_app
    from mlflow.utils import workspace_context

    seen: list[tuple] = []
    flask_app = Flask("plain-middleware-test")

    @flask_app.route(FLASK_PATH, methods=["GET", "POST"])
    def view():
        # What MLflow's workspace middleware binds for the request, as the Flask thread sees it.
        seen.append((workspace_context._WORKSPACE.get(), workspace_context._IS_WORKSPACE_RESOLVED.get()))
        return jsonify(ok=True)

    fastapi_app = create_fastapi_app(flask_app)
    # Before Flask's catch-all mount, and before the permission middleware takes its list of native routes.
    fastapi_app.router.routes.insert(0, APIRoute(UNVALIDATED_PATH, lambda: {"pong": True}, methods=["GET"]))
    auth.add_fastapi_permission_middleware(fastapi_app)
    wrapped = []
    if plain:
        wrapped = image_modules.load(monkeypatch, "serve").plain_middlewares(fastapi_app)
    return fastapi_app, seen, wrapped


def _answers(app, requests) -> list[tuple]:
    from starlette.testclient import TestClient

    with TestClient(app, base_url="http://localhost") as client:
        answers = []
        for method, path, headers in requests:
            reply = client.request(method, path, headers=headers, json={} if method == "POST" else None)
            kept = {k: v for k, v in reply.headers.items() if k.lower() not in ("date", "content-length")}
            answers.append((reply.status_code, reply.text, sorted(kept.items())))
        return answers


REQUESTS = [
    ("POST", FLASK_PATH, {}),  # a tracking API call, served by Flask: handed on
    ("GET", FLASK_PATH, {}),
    ("POST", FLASK_PATH, {WORKSPACE_HEADER: "team-a"}),  # workspaces off: MLflow's error
    ("POST", FLASK_PATH, {WORKSPACE_HEADER: "  "}),  # a blank header is no header
    ("POST", GATEWAY_PATH, {}),  # a FastAPI route with a validator: basic-auth asks for a login
    ("POST", GATEWAY_PATH, {"Authorization": "Basic bm9ib2R5Ondyb25n"}),  # wrong credentials
    ("GET", UNVALIDATED_PATH, {}),  # refused when failing closed (MLflow's default), else served
    ("GET", "/health", {}),  # public
    ("GET", "/ajax-api/2.0/mlflow/no-such-route", {}),
    ("OPTIONS", FLASK_PATH, {"Origin": "http://localhost", "Access-Control-Request-Method": "POST"}),
    ("POST", FLASK_PATH, {"Host": "evil.example"}),  # refused by MLflow's host check either way
]


@pytest.mark.parametrize("fail_closed", ["true", "false"])
def test_every_answer_is_mlflows(monkeypatch, fail_closed):
    """The same answers with and without change 17, and the Flask view sees the same workspace context."""
    monkeypatch.setenv("MLFLOW_BASIC_AUTH_FAIL_CLOSED", fail_closed)
    mlflows_app, mlflows_seen, _ = _apps(monkeypatch, plain=False)
    expected = _answers(mlflows_app, REQUESTS)
    plain_app, plain_seen, wrapped = _apps(monkeypatch, plain=True)
    actual = _answers(plain_app, REQUESTS)
    assert sorted(wrapped) == ["fastapi_permission_middleware", "gateway_timing_middleware",
                               "workspace_context_middleware"]  # fmt: skip
    assert actual == expected
    assert plain_seen == mlflows_seen == [(None, True)] * len(plain_seen) and len(plain_seen) >= 3
    statuses = [status for status, _, _ in expected]
    assert statuses[:3] == [200, 200, 500] and statuses[4] == 401  # handed on; MLflow's error; no login
    assert statuses[REQUESTS.index(("GET", UNVALIDATED_PATH, {}))] == (403 if fail_closed == "true" else 200)


def test_only_requests_handed_on_skip_the_middlewares(monkeypatch):
    """A Flask route's request enters none of MLflow's function middlewares; a gateway call enters all three
    (basic-auth checks it), a request with a workspace header enters the workspace middleware."""
    from starlette.middleware.base import BaseHTTPMiddleware

    app, _, _ = _apps(monkeypatch, plain=True)
    entered: list[str] = []
    mlflows_call = BaseHTTPMiddleware.__call__

    async def counting(self, scope, receive, send):
        if scope["type"] == "http":  # not the test client's lifespan events
            entered.append(self.dispatch_func.__name__)
        await mlflows_call(self, scope, receive, send)

    monkeypatch.setattr(BaseHTTPMiddleware, "__call__", counting)

    def entering(request) -> list[str]:
        entered.clear()
        _answers(app, [request])
        return sorted(entered)

    assert entering(("POST", FLASK_PATH, {})) == []
    assert entering(("GET", "/health", {})) == []
    assert entering(("POST", GATEWAY_PATH, {})) == ["fastapi_permission_middleware"]  # refused there: 401
    assert entering(("POST", FLASK_PATH, {WORKSPACE_HEADER: "team-a"})) == ["workspace_context_middleware"]


@pytest.mark.parametrize("fail_closed", ["true", "false"])
def test_the_permission_decision_is_mlflows_and_kept_per_path(monkeypatch, fail_closed):
    """Decided by basic-auth's own functions: a path with a FastAPI validator never passes; a native route
    without one passes only when MLflow would not refuse it (MLFLOW_BASIC_AUTH_FAIL_CLOSED); decisions are
    kept per method and path, up to PERMISSION_DECISIONS."""
    import mlflow.server.auth as auth

    monkeypatch.setenv("MLFLOW_BASIC_AUTH_FAIL_CLOSED", fail_closed)
    app, _, _ = _apps(monkeypatch, plain=False)
    serve = image_modules.load(monkeypatch, "serve")
    native = auth._native_fastapi_routes(app)
    check = serve._permission_passes(native)
    asked: list[str] = []
    monkeypatch.setattr(
        auth,
        "_find_fastapi_validator",
        lambda path, method, f=auth._find_fastapi_validator: asked.append(path) or f(path, method),
    )

    def scope(method: str, path: str) -> dict:
        return {
            "type": "http",
            "method": method,
            "path": path,
            "root_path": "",
            "headers": [],
            "query_string": b"",
        }

    assert check(scope("POST", FLASK_PATH)) is not None
    assert check(scope("POST", GATEWAY_PATH)) is None
    assert check(scope("GET", "/health")) is not None
    # A native route without a validator: MLflow refuses it when failing closed, so the middleware runs.
    assert (check(scope("GET", UNVALIDATED_PATH)) is None) is (fail_closed == "true")
    asked.clear()
    for _ in range(3):
        check(scope("POST", FLASK_PATH))
    assert asked == []  # kept
    monkeypatch.setattr(serve, "PERMISSION_DECISIONS", 2)
    check = serve._permission_passes(native)
    for index in range(5):
        check(scope("GET", f"/ajax-api/2.0/mlflow/runs/get/{index}"))
    assert len(asked) == 5


@pytest.mark.parametrize(("setting", "installed"), [(None, True), ("true", True), ("false", False)])
def test_every_serving_process_installs_it_unless_turned_off(monkeypatch, setting, installed):
    """Change 17 is part of each uvicorn worker's startup (serve.py patches it), before the app first serves;
    MLFLOW_AKS_PLAIN_MIDDLEWARE=false keeps MLflow's middlewares as they are."""
    import uvicorn
    from mlflow.store.artifact import artifact_repository_registry

    registry = artifact_repository_registry._artifact_repository_registry._registry
    monkeypatch.setitem(registry, "mlflow-artifacts", registry["mlflow-artifacts"])  # change 16: restored
    serve = image_modules.load(monkeypatch, "serve")
    for name in (serve.READINESS_KEY_ENV, serve.METRICS_PORT_ENV, serve.DRAIN_SECONDS_ENV):
        monkeypatch.delenv(name, raising=False)
    for name in (serve.STREAM_ARTIFACTS, serve.FAST_STORE, serve.FAST_METRICS):
        monkeypatch.setenv(name, "false")  # nothing else of MLflow's patched here
    monkeypatch.setenv(serve._AUTH_APP, serve.OIDC_APP)  # no basic-auth patches; no issuer: no group gate
    if setting is None:
        monkeypatch.delenv(serve.PLAIN_MIDDLEWARE, raising=False)
    else:
        monkeypatch.setenv(serve.PLAIN_MIDDLEWARE, setting)
    app, _, _ = _apps(monkeypatch, plain=False)
    seen = []

    async def started(self, sockets=None):  # uvicorn's own startup: where the worker starts serving
        seen.append([middleware.cls.__name__ for middleware in app.user_middleware])

    monkeypatch.setattr(uvicorn.server.Server, "startup", started)
    serve._patch_uvicorn_worker()
    image_modules.run_worker_startup(app)
    wrapper = "_PlainWhenPassing" if installed else "BaseHTTPMiddleware"
    assert seen == [[wrapper] * 3 + ["HostValidationMiddleware", "CORSMiddleware", "CORSBlockingMiddleware",
                                     "SecurityHeadersMiddleware"]]  # fmt: skip
