"""Entry point of the tracking-server container: `python /app/serve.py <mlflow server arguments>`.

The chart's Deployment and the local stack both start the server through this file with the same
arguments, so whatever the server needs beyond `mlflow server` lives here, in one place.

It runs MLflow's own `mlflow server` command (argument checks, basic-auth bootstrap, database
initialisation, the full FastAPI + Flask app under uvicorn), changing only how uvicorn is run.
Each change is measured by `python -m benchmarks.tracking_server` (see README, "Performance"):

1. TCP_NODELAY on every accepted connection. uvicorn binds its own listening socket when it runs
   more than one worker, created without `IPPROTO_TCP`, so asyncio does not set TCP_NODELAY on the
   connections it accepts (uvicorn issue 3149): a response written in two segments then waits for
   the client's delayed ACK, about 40 ms per request on a kept-alive connection. Here the listening
   socket is re-created as an explicit TCP socket (and carries TCP_NODELAY, which Linux passes on to
   accepted sockets), whatever the worker count.
2. uvicorn in this process. `mlflow server` normally stays resident as a parent that only waits for
   a `python -m uvicorn` child: one more interpreter with MLflow imported, and one more start-up.
   With the job runner off (nothing of ours uses MLflow's server-side jobs), uvicorn runs here
   instead, with the environment MLflow prepared for it. With the job runner on, MLflow keeps its
   own process layout (the runner watches the server's PID), and uvicorn still gets (1) and (3).
3. With several workers, each worker listens on its own SO_REUSEPORT socket. On one shared
   listening socket the first worker to wake accepts nearly every connection, so kept-alive clients
   pile up on one worker while the others idle; with SO_REUSEPORT the kernel spreads connections.
4. `--workers` defaults to the container's CPU limit (cgroup quota, rounded down, at least 1)
   instead of MLflow's fixed 4, when the arguments do not set it.
5. With basic-auth, each worker remembers which experiment a run belongs to (bounded LRU, size
   from MLFLOW_AKS_RUN_EXPERIMENT_CACHE_SIZE, default 10000, 0 turns it off). MLflow's permission
   check of every run write by a non-admin user (log_metric, log_batch, set_tag, ...) otherwise
   loads the whole run (params, tags, latest metrics, inputs) only to read its experiment id, a
   quarter of the request's CPU. A run never changes experiment, so the answer cannot go stale;
   the permission itself is still resolved on every request, as MLflow does.
6. With basic-auth and MLflow's credential cache on (`auth_cache_ttl_seconds` > 0), a Flask request
   looks its own user up once. MLflow's `_authenticate_cached` already returns the user (id,
   is_admin) behind the credential, but the Flask checks then fetch that same user again by name,
   once to ask whether it is an admin and once per permission check for its id: two extra database
   sessions per request. Here those lookups get the user the request was authenticated as, which
   is exactly what MLflow's FastAPI routes use (`if not user.is_admin` on the cached user). MLflow
   drops a user from its cache when it changes their admin flag or password or deletes them; the
   request's copy is dropped with it. Any other user, and any request outside Flask, reads the
   database as before. MLFLOW_AKS_SHARE_REQUEST_USER=false turns this off.
7. A readiness endpoint of the platform's own (READINESS_PATH), answered before MLflow's app and its
   authentication. The kubelet's probe (ready.py) proves it holds the pod's Flask secret key (an HMAC
   of it in READINESS_HEADER; anything else gets a 404), and the server then checks, in this process
   and with its own stores, the tracking database, the basic-auth user store and the artifact store.
   So readiness never depends on a password a person may change: an admin who changes the admin
   password through the UI (good practice) no longer turns every pod NotReady.
8. Artifacts of any size: with the artifact store on Azure Blob, uploads and downloads through the
   proxy stream to and from the blob store in bounded blocks, never through the scratch volume, and
   an interrupted upload leaves nothing visible (stream_artifacts.py, which says why MLflow's own
   paths fail or spool). MLFLOW_AKS_STREAM_ARTIFACTS=false turns this off.
9. Prometheus metrics (requests by endpoint and status, their latency, requests in flight) on their
   own port, MLFLOW_AKS_METRICS_PORT, which no Service exposes (metrics.py). Unset: no metrics.
10. Revocations reach every replica within seconds. MLflow drops a user from the credential cache of the
   process that changed their password or admin flag, or deleted them. Every other replica would
   keep the cached login until its TTL expires, 60 s, which is also how long (6) keeps a removed
   admin's rights there. Here each change is also logged in the auth database (migrate.py's
   `mlflow_aks_user_changes`), and every serving process reads that log every
   MLFLOW_AKS_USER_SYNC_SECONDS (1 s; 0 turns it off) and drops the users named there. That is one
   small query per second per process, and nothing on a request's path.

11. Single sign-on: with `--app-name oidc-auth`, MLflow runs the mlflow-oidc-auth plugin's app (OIDC_*
   settings from the environment) instead of basic-auth. (5), (6) and (10) patch basic-auth, so they stay
   off; (7) checks the plugin's user store in place of basic-auth's, and (8) and (9) work as before. One
   addition: a person's bearer token must name an allowed group on every request (`with_group_gate`),
   which the plugin checks only when the token's first use creates the user.
   Judges' AI Gateway calls: MLflow's judges in the jobs pod call `/gateway/` here with Basic
   `<user>:<internal gateway token>`, a credential only MLflow's basic-auth knows, so the plugin answered
   them 401. Here the plugin also accepts the chart's internal token, on `/gateway/` routes only and
   compared in constant time, as one account of its own: MLFLOW_AKS_GATEWAY_ACCOUNT, a non-admin service
   account created at start (`accept_internal_gateway_token`). Whatever user name comes with the token,
   the call counts as that account (a job's code can read the token: it must not make anyone an admin),
   and the plugin still decides the rest (the account active, and USE on the endpoint named). Not the
   jobs pod's ServiceAccount token instead: MLflow's judges send Basic credentials only
   (mlflow/genai/utils/gateway_utils.py, _build_auth_headers), and a token the plugin accepts would open
   the whole API to that pod, where this opens the gateway's routes only.
12. Server-side jobs run in a pod of their own (jobs.py, the chart's `jobs` Deployment). With
   MLFLOW_AKS_JOB_RUNNER=separate, MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true only lets this server accept
   jobs (a PENDING row in the tracking database, MLflow's `executor` engine); `mlflow server` does not
   start a runner beside it, so uvicorn still runs in this process as in (2).

13. Rollouts and node drains fail no request. Kubernetes signals a stopping pod while it removes it from
   the Service's endpoints, and the nodes and load balancers learn of the removal a few seconds later. On
   the first SIGTERM (or Ctrl-C) the server keeps serving for MLFLOW_AKS_DRAIN_SECONDS, and every answer
   then carries `Connection: close`, so a kept-alive client's next request opens a new connection, which
   goes to another pod; uvicorn would otherwise close idle kept-alive connections at once, under a client
   about to send on one. Then uvicorn stops accepting and gives the requests in flight (an artifact upload
   or download) MLFLOW_AKS_GRACEFUL_SHUTDOWN_SECONDS to finish (`timeout_graceful_shutdown`). The chart
   derives both, and the pod's grace period, from `tracking.shutdown`. A second signal stops at once.

14. Faster reads of the tracking store (fast_store.py): the runs search of the experiment page, metric
   histories and the charts' sampled histories return MLflow's own answers without its ORM objects, the
   sampled history of many runs in one statement, and a metric history's, the charts' and a runs
   search's JSON without protobuf messages. With basic-auth, the charts' permission check reads the runs'
   experiments in one statement (MLflow loads each run in full), a runs search's answer is parsed
   again only when it has model links to withhold, and a user's role grants (read for every permission
   decision) are read with one statement built once instead of an ORM query built per request.
   migrate.py adds the index the experiment page's order reads. MLFLOW_AKS_FAST_STORE=false turns this
   off.

15. Long metric histories and bulk metric writes (fast_metrics.py): get-history's points read as plain rows
   and written as JSON directly, and basic-auth's redaction of it, which parses the whole answer back into
   protobuf to clear a `model_id` the SQL store never sets, skipped for those answers; log_batch of plain
   metrics parsed from its JSON once instead of into protobuf twice (basic-auth's check and the handler),
   validated once, written in one transaction as plain rows. Other requests take MLflow's code.
   MLFLOW_AKS_FAST_METRICS=false turns this off.

16. `mlflow-artifacts:` URIs resolved in this process. What MLflow writes from inside the server itself, such
   as the AI Gateway's usage-tracking trace of every call (judges' included), goes to the experiment's
   artifact location, `mlflow-artifacts:/<path>`. MLflow's `MlflowArtifactsRepository` resolves that only
   against an http(s) tracking URI, and the server's own tracking URI is its database: the trace's spans
   still reached the database (the SQL store's log_spans), but its data file and attachments in the artifact
   store were not written, with "Failed to send trace to MLflow backend: When an mlflow-artifacts URI was
   supplied, the tracking URI must be a valid http or https URI" in the log for each call. This process
   serves those URIs anyway (`--serve-artifacts`) and holds the store's credentials: here, when the tracking
   URI is not http(s), `mlflow-artifacts:/<path>` opens `--artifacts-destination` + `<path>` directly, what
   MLflow's own trace handlers do with such a URI (`_get_trace_repo_from_uri`), a path that climbs out of
   the destination refused as its artifact handlers refuse it (`validate_path_is_safe`). Every other case
   (an http(s) tracking URI, a URI naming a host, no artifacts served here) is MLflow's class, unchanged.

17. MLflow's three function middlewares (Starlette's `BaseHTTPMiddleware`) run as plain ASGI for a request
   they would only hand on. Each such middleware runs the rest of the app in a task of its own and streams
   the answer back through it, on every request: about a tenth of the server's CPU on the experiment page,
   whose 13 calls go to Flask. Here basic-auth's permission check of FastAPI routes passes a request on
   when MLflow's own functions say it would (an unprotected route, or no FastAPI validator and not refused
   as a native route), decided once per method and path; the AI Gateway's timing passes on anything but
   /gateway/; the workspace context, with workspaces off and no workspace header, binds no workspace for
   the request as MLflow's does. Any other request, and any condition that fails, takes the middleware as
   MLflow wrote it (`plain_middlewares`). MLFLOW_AKS_PLAIN_MIDDLEWARE=false turns this off.

(5), (6), (7), (8), (10), (12), (14), (15), (16) and (17) reach into MLflow's private internals, which change
between releases without notice. So the server refuses to start with any MLflow but TESTED_MLFLOW_VERSION,
the one they were written and tested against (tests/test_images.py keeps it equal to the image's pin): a
new MLflow needs these patches re-read and re-tested first. The sign-in plugin reaches into MLflow's
internals too, so with `--app-name oidc-auth` it must be TESTED_OIDC_AUTH_VERSION as well.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import json
import math
import os
import posixpath
import re
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

TESTED_MLFLOW_VERSION = "3.17.2"
# (11) The mlflow-oidc-auth release tested with that MLflow (tests/test_images.py: equal to the image's pin).
TESTED_OIDC_AUTH_VERSION = "10.2.0"
OIDC_APP = "oidc-auth"
# The `--app-name` of this server, for its worker processes (they do not see the arguments).
_AUTH_APP = "_MLFLOW_AKS_AUTH_APP"

# Set in the environment of a uvicorn child that MLflow starts itself (job runner on), so that this
# file, started in its place, runs uvicorn with the same changes.
_UVICORN_CHILD = "_MLFLOW_AKS_SERVE_UVICORN_CHILD"
# (12) `separate`: the job runner is the jobs Deployment's (jobs.py), never started here.
JOB_RUNNER_ENV = "MLFLOW_AKS_JOB_RUNNER"
# The password MLflow's basic-auth accepts on /gateway/ routes from jobs (any user name).
GATEWAY_TOKEN_ENV = "_MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN"  # noqa: S105 (a variable name)
# (11) With sign-in: the plugin's service account that the internal token authenticates as, on /gateway/.
GATEWAY_ACCOUNT_ENV = "MLFLOW_AKS_GATEWAY_ACCOUNT"
GATEWAY_PREFIX = "/gateway/"
# Set by this process for its spawned uvicorn workers: they open their own SO_REUSEPORT socket.
_REUSEPORT = "_MLFLOW_AKS_SERVE_REUSEPORT"
RUN_EXPERIMENT_CACHE_SIZE = "MLFLOW_AKS_RUN_EXPERIMENT_CACHE_SIZE"
SHARE_REQUEST_USER = "MLFLOW_AKS_SHARE_REQUEST_USER"
STREAM_ARTIFACTS = "MLFLOW_AKS_STREAM_ARTIFACTS"
FAST_STORE = "MLFLOW_AKS_FAST_STORE"
FAST_METRICS = "MLFLOW_AKS_FAST_METRICS"
PLAIN_MIDDLEWARE = "MLFLOW_AKS_PLAIN_MIDDLEWARE"
# (17) How many (method, path) permission decisions a process keeps before it starts again.
PERMISSION_DECISIONS = 4096
USER_SYNC_SECONDS = "MLFLOW_AKS_USER_SYNC_SECONDS"
# (9) Where metrics.py serves; no port: no metrics.
METRICS_PORT_ENV = "MLFLOW_AKS_METRICS_PORT"
METRICS_HOST_ENV = "MLFLOW_AKS_METRICS_HOST"
# (7) The platform's readiness check: path, the header carrying its token, the key the token derives from.
READINESS_PATH = "/_mlflow_aks/ready"
READINESS_HEADER = "x-mlflow-aks-readiness"
READINESS_KEY_ENV = "MLFLOW_FLASK_SERVER_SECRET_KEY"
# A prefix that never holds artifacts: listing it costs one small request to the artifact store.
READINESS_ARTIFACT_PATH = "readiness-probe"
# (13) Seconds to keep serving after SIGTERM, then seconds the requests in flight get to finish.
DRAIN_SECONDS_ENV = "MLFLOW_AKS_DRAIN_SECONDS"
GRACEFUL_SHUTDOWN_SECONDS_ENV = "MLFLOW_AKS_GRACEFUL_SHUTDOWN_SECONDS"
# Set once this process is draining (per serving process: each worker drains on its own signal).
_draining = threading.Event()
# The longest the endpoint waits for its checks (the probe asks for its own remaining time, `?timeout=`).
READINESS_MAX_TIMEOUT = 30.0


def readiness_token(secret_key: str) -> str:
    """What the probe sends: an HMAC of the pod's Flask secret key (the key itself never travels)."""
    return hmac.new(secret_key.encode(), b"mlflow-aks readiness", hashlib.sha256).hexdigest()


def cpu_limit(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The container's CPU limit in cores (cgroup v2 `cpu.max`, else v1 CFS quota), None if unlimited."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def default_workers() -> int:
    """One uvicorn worker per whole CPU of the limit (at least 1); the usable CPUs when unlimited."""
    limit = cpu_limit()
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cores = available if limit is None else min(limit, available)
    return max(1, math.floor(cores))


def with_default_workers(args: list[str]) -> list[str]:
    if any(a in ("-w", "--workers") or a.startswith("--workers=") for a in args):
        return args
    return [*args, "--workers", str(default_workers())]


def _tcp_listener(sock: socket.socket) -> socket.socket:
    """The same bound socket as an explicit TCP socket with TCP_NODELAY (inherited by accepted ones)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        return sock
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if sock.proto == socket.IPPROTO_TCP:
        return sock
    tcp = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
    tcp.set_inheritable(True)
    return tcp


def _reuseport_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT (before bind), so that each worker can bind its own."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _patch_uvicorn_supervisor(workers: int) -> None:
    """In the process that binds: an explicit TCP listener, with SO_REUSEPORT when workers > 1."""
    import logging

    import uvicorn.config

    original = uvicorn.config.Config.bind_socket

    def bind_socket(self: uvicorn.config.Config) -> socket.socket:
        if workers == 1 or self.uds is not None or self.fd is not None:
            return _tcp_listener(original(self))
        try:
            sock = _reuseport_listener(self.host, self.port)
        except OSError as err:
            logging.getLogger("uvicorn.error").error(err)
            sys.exit(uvicorn.config.STARTUP_FAILURE)
        logging.getLogger("uvicorn.error").info(
            "Uvicorn running on http://%s:%d with SO_REUSEPORT per worker (Press CTRL+C to quit)",
            self.host,
            sock.getsockname()[1],
        )
        os.environ[_REUSEPORT] = "1"  # read by the spawned workers
        return sock

    uvicorn.config.Config.bind_socket = bind_socket  # type: ignore[method-assign]


def _cache_run_experiments(size: int) -> None:
    """Resolve a run's experiment from a per-process cache in MLflow's basic-auth permission checks.

    MLflow's `_run_requirement(run_id, action)` fetches the run (`_fetch_or_none(store.get_run,
    run_id)`) and uses only `run.info.experiment_id`. On a cache hit, that one fetch returns a stub
    carrying the known experiment id, and MLflow's own code builds the requirements as always. A run
    that does not exist is never cached (MLflow denies it, and will again next time).
    """
    import mlflow.server.auth as auth
    from cachetools import LRUCache

    if getattr(auth, "_mlflow_aks_run_cache", False):
        return
    experiments: LRUCache[str, str] = LRUCache(maxsize=size)
    lock = threading.Lock()
    known: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("known_run", default=None)
    original_fetch = auth._fetch_or_none
    original_requirement = auth._run_requirement

    def fetch_or_none(fetch, resource_id):
        hit = known.get()
        if hit is not None and hit[0] == resource_id and getattr(fetch, "__name__", "") == "get_run":
            return SimpleNamespace(info=SimpleNamespace(run_id=resource_id, experiment_id=hit[1]))
        return original_fetch(fetch, resource_id)

    def run_requirement(run_id, action):
        with lock:
            experiment_id = experiments.get(run_id)
        if experiment_id is None:
            resolved = original_requirement(run_id, action)
            if resolved is not None:
                with lock:
                    experiments[run_id] = resolved[0][1]
            return resolved
        token = known.set((run_id, experiment_id))
        try:
            return original_requirement(run_id, action)
        finally:
            known.reset(token)

    auth._fetch_or_none = fetch_or_none
    auth._run_requirement = run_requirement
    auth._mlflow_aks_run_cache = True


def _share_authenticated_user() -> None:
    """In a Flask request, `store.get_user(name)` of the authenticated user returns that user.

    `_authenticate_cached` is wrapped to keep the user it returns on `flask.g` for the rest of the
    request; `store.get_user` is wrapped to return it for the same name; `_invalidate_user_auth_cache`
    is wrapped to drop it together with MLflow's cached credentials.
    """
    import flask
    import mlflow.server.auth as auth

    if getattr(auth, "_mlflow_aks_request_user", False) or auth._USER_AUTH_CACHE is None:
        return
    original_authenticate = auth._authenticate_cached
    original_get_user = auth.store.get_user
    original_invalidate = auth._invalidate_user_auth_cache

    def authenticate_cached(username, password):
        user = original_authenticate(username, password)
        if flask.has_request_context():
            flask.g._mlflow_aks_user = user if user is not None and user.username == username else None
        return user

    def request_user(username):
        """The user this Flask request was authenticated as, if that is `username`; else None."""
        if not flask.has_request_context():
            return None
        user = flask.g.get("_mlflow_aks_user")
        return user if user is not None and user.username == username else None

    def get_user(username):
        return request_user(username) or original_get_user(username)

    def invalidate_user_auth_cache(username):
        original_invalidate(username)
        if request_user(username) is not None:
            flask.g._mlflow_aks_user = None

    auth._authenticate_cached = authenticate_cached
    auth.store.get_user = get_user
    auth._invalidate_user_auth_cache = invalidate_user_auth_cache
    auth._mlflow_aks_request_user = True


_CREDENTIALS_IN_URL = re.compile(r"(://[^/:@\s]+):[^@\s]+@")


def _failure(error: BaseException) -> str:
    """One line for the probe's output (kubelet events): no credentials from a URL, bounded length."""
    text = _CREDENTIALS_IN_URL.sub(r"\1:***@", f"{type(error).__name__}: {error}")
    return " ".join(text.split())[:300]


def check_stores(timeout: float) -> dict[str, str]:
    """The server's own stores, as its request handlers reach them: check name -> "ok" or what failed.

    Each check runs in a thread of its own and gets `timeout` seconds: an unreachable store (the Azure
    SDK retries for a minute) is reported by name, and does not hide the answer of the others.
    """
    from mlflow.server import handlers

    checks = {"tracking database": lambda: handlers._get_tracking_store().search_experiments(max_results=1)}
    if _sign_in():
        from mlflow_oidc_auth.store import store as sign_in_store

        checks["user store"] = lambda: _raise_unless(sign_in_store.ping(), "the user store does not answer")
    elif _basic_auth():
        import mlflow.server.auth as auth

        checks["user store"] = lambda: auth.store.has_user("mlflow-aks-readiness")
    checks["artifact store"] = lambda: handlers._get_artifact_repo_mlflow_artifacts().list_artifacts(
        READINESS_ARTIFACT_PATH
    )
    results: dict[str, str] = {}

    def run(name: str, check) -> None:
        try:
            check()
            results[name] = "ok"
        except Exception as error:  # any failure makes the pod not ready, and says why
            results[name] = _failure(error)

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in checks.items()]
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return {name: results.get(name, f"no answer within {timeout:.0f}s") for name in checks}


def _raise_unless(ok: bool, problem: str) -> None:
    if not ok:
        raise ConnectionError(problem)


def _sign_in() -> bool:
    """(11) This server runs the sign-in plugin's app."""
    return os.environ.get(_AUTH_APP) == OIDC_APP


def _basic_auth() -> bool:
    """This server runs MLflow's basic-auth app (loaded with it: the patches (5), (6), (10) apply)."""
    return "mlflow.server.auth" in sys.modules and not _sign_in()


def app_name(args: list[str]) -> str | None:
    """The `--app-name` among `mlflow server` arguments."""
    for i, arg in enumerate(args):
        if arg.startswith("--app-name="):
            return arg.split("=", 1)[1]
        if arg == "--app-name" and i + 1 < len(args):
            return args[i + 1]
    return None


def bearer_claims(headers: list[tuple[bytes, bytes]]) -> dict | None:
    """The claims of a request's `Authorization: Bearer <JWT>`, NOT verified (None: no such header, or not
    a JWT). Only for refusing more than the plugin does; the plugin verifies every token it accepts."""
    import base64

    value = dict(headers).get(b"authorization", b"")
    if value[:7].lower() != b"bearer ":
        return None
    parts = value[7:].strip().split(b".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + b"=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


def with_group_gate(app, issuer: str, allowed: set[str], groups_claim: str = "groups"):
    """(11) Bearer tokens of the people's provider must name an allowed group on every request.

    The plugin checks a bearer token's groups only when the token's first use creates the user; after that
    any valid token of that user is accepted. So someone removed from the allowed groups would keep API
    access with new tokens. Here a token of `issuer` whose groups claim names none of `allowed` is refused
    before the plugin sees it (run Jobs' tokens have another issuer, and the plugin allowlists their
    namespace). It only ever refuses: a token this lets through is still verified by the plugin."""

    async def refuse(send) -> None:
        body = json.dumps(
            {
                "error_code": "PERMISSION_DENIED",
                "message": "The token names none of the groups allowed to sign in",
            }
        ).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def gated(scope, receive, send):
        if scope["type"] == "http" and (claims := bearer_claims(scope.get("headers") or [])) is not None:
            groups = claims.get(groups_claim)
            if claims.get("iss") == issuer and not (
                isinstance(groups, list) and allowed & set(map(str, groups))
            ):
                return await refuse(send)
        return await app(scope, receive, send)

    return gated


def internal_gateway_credential(path: str, authorization: str | None, token: str) -> bool:
    """(11) Whether a request to the routed `path` carries MLflow's internal gateway `token` as the password
    of its Basic credential, on a `/gateway/` route (anywhere else the token is no credential at all)."""
    if not token or not path.startswith(GATEWAY_PREFIX) or not authorization:
        return False
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return False
    import base64
    import binascii

    try:
        _, _, password = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return hmac.compare_digest(password.encode(), token.encode())


def gateway_account_problem(profile) -> str | None:
    """(11) Why the plugin's user `profile` must not be the one the internal token authenticates as."""
    if not getattr(profile, "is_service_account", False):
        return "it is not a service account"
    if getattr(profile, "is_admin", False):
        return "it is an admin"
    if not getattr(profile, "active", True):
        return "it is deactivated"
    return None


def _ensure_gateway_account(store, account: str) -> str | None:
    """(11) The plugin's non-admin service account `account`, created when missing (each serving process
    may try at once: the first create wins); why it cannot be used, or None."""
    from mlflow_oidc_auth.utils.service_accounts import INTERNAL_SOURCE

    if not store.has_user(account):
        try:
            store.create_user(
                account,
                "AI Gateway calls of MLflow's jobs (LLM judges)",
                is_admin=False,
                is_service_account=True,
                written_by="mlflow-aks",
                service_account_source=INTERNAL_SOURCE,
            )
        except Exception:  # another process created it first: checked below like any existing account
            if not store.has_user(account):
                raise
    return gateway_account_problem(store.get_user_profile(account))


def accept_internal_gateway_token(token: str, account: str) -> None:
    """(11) The plugin authenticates a `/gateway/` request carrying the internal token as `account`, while
    that is an active non-admin service account (checked on each such request: an admin may change it)."""
    import asyncio
    import logging

    from mlflow_oidc_auth.middleware import auth_middleware
    from mlflow_oidc_auth.middleware.route_path import routed_path
    from mlflow_oidc_auth.store import store

    middleware = auth_middleware.AuthMiddleware
    if getattr(middleware, "_mlflow_aks_gateway_token", False):
        return
    logger = logging.getLogger("mlflow_aks")
    account = account.lower()  # the plugin's user names are lower case
    if problem := _ensure_gateway_account(store, account):
        logger.error(
            "judges' AI Gateway calls will be refused: the account %r cannot be theirs (%s)", account, problem
        )
    original = middleware._authenticate_user

    async def authenticate_user(self, request):
        given = request.headers.get("authorization")
        if not internal_gateway_credential(routed_path(request.scope), given, token):
            return await original(self, request)
        try:
            problem = gateway_account_problem(await asyncio.to_thread(store.get_user_profile, account))
        except Exception as error:  # deleted, or the store away: no account, no access
            problem = f"it cannot be read ({type(error).__name__})"
        if problem:
            logger.warning(
                "refused a judge's AI Gateway call: the account %r cannot be theirs (%s)", account, problem
            )
            return False, None, "the gateway account cannot be used"
        return True, account, ""

    middleware._authenticate_user = authenticate_user
    middleware._mlflow_aks_gateway_token = True


def _env_seconds(variable: str) -> float | None:
    try:
        return max(0.0, float(os.environ[variable]))
    except (KeyError, ValueError):
        return None


def with_drain(app, draining: threading.Event):
    """(13) Once `draining` is set, every response says `Connection: close` (uvicorn then closes the
    connection after it), whenever its request started."""

    async def drained(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def send_closing(message):
            if message["type"] == "http.response.start" and draining.is_set():
                headers = [(k, v) for k, v in message.get("headers") or [] if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return await app(scope, receive, send_closing)

    return drained


def _drain_on_exit_signal(drain_seconds: float) -> None:
    """(13) uvicorn's first exit signal starts the drain; uvicorn's own handling follows `drain_seconds`
    later (or at once, on a second signal)."""
    import logging

    import uvicorn.server

    original = uvicorn.server.Server.handle_exit
    if getattr(original, "_mlflow_aks_drain", False):
        return

    def handle_exit(self: uvicorn.server.Server, sig: int, frame) -> None:
        if _draining.is_set():
            return original(self, sig, frame)
        _draining.set()
        logging.getLogger("uvicorn.error").info(
            "Draining for %.0f s: serving on, each answer closing its connection", drain_seconds
        )
        timer = threading.Timer(drain_seconds, original, args=(self, sig, None))
        timer.daemon = True
        timer.start()

    handle_exit._mlflow_aks_drain = True  # type: ignore[attr-defined]
    uvicorn.server.Server.handle_exit = handle_exit  # type: ignore[method-assign]


def with_readiness(app, secret_key: str):
    """The ASGI app, with READINESS_PATH answered here for a caller holding the readiness token."""
    import asyncio

    token = readiness_token(secret_key).encode()

    async def send_json(send, status: int, body: dict) -> None:
        payload = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def readiness_app(scope, receive, send):
        if scope["type"] != "http" or scope["path"] != READINESS_PATH:
            return await app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(READINESS_HEADER.encode(), b"")
        if scope["method"] != "GET" or not hmac.compare_digest(given, token):
            return await send_json(send, 404, {"error_code": "ENDPOINT_NOT_FOUND"})
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode())
        try:
            timeout = min(max(float(query.get("timeout", ["8"])[0]), 1.0), READINESS_MAX_TIMEOUT)
        except ValueError:
            timeout = READINESS_MAX_TIMEOUT
        results = await asyncio.to_thread(check_stores, timeout)
        ready = all(result == "ok" for result in results.values())
        return await send_json(send, 200 if ready else 503, {"ready": ready, "checks": results})

    return readiness_app


def _sync_user_changes(interval: float) -> None:
    """(10) Log this process's user changes; drop every user another process changed from the cache."""
    import logging

    import migrate  # beside this file: the platform tables' definitions
    import mlflow.server.auth as auth
    import sqlalchemy

    if getattr(auth, "_mlflow_aks_user_sync", False) or auth._USER_AUTH_CACHE is None or interval <= 0:
        return
    engine, changes = auth.store.engine, migrate.USER_CHANGES
    original_update, original_delete = auth.store.update_user, auth.store.delete_user

    def update_user(username, *args, **kwargs):
        result = original_update(username, *args, **kwargs)
        migrate.record_user_change(engine, username)
        return result

    def delete_user(username, *args, **kwargs):
        result = original_delete(username, *args, **kwargs)
        migrate.record_user_change(engine, username)
        return result

    def newest() -> int:
        with engine.connect() as conn:
            return conn.execute(sqlalchemy.select(sqlalchemy.func.max(changes.c.id))).scalar() or 0

    # What changed before this process started does not matter: its cache started empty.
    seen = newest()

    def follow() -> None:
        nonlocal seen
        while True:
            time.sleep(interval)
            try:
                with engine.connect() as conn:
                    rows = conn.execute(
                        sqlalchemy.select(changes.c.id, changes.c.username).where(changes.c.id > seen)
                    ).all()
            except Exception as error:  # the database is away: try again at the next tick
                logging.getLogger("mlflow_aks").warning("user-change sync: %s", _failure(error))
                continue
            for row_id, username in rows:
                auth._invalidate_user_auth_cache(username)
                seen = max(seen, row_id)

    auth.store.update_user = update_user
    auth.store.delete_user = delete_user
    threading.Thread(target=follow, name="mlflow-aks-user-sync", daemon=True).start()
    auth._mlflow_aks_user_sync = True


def _user_sync_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(USER_SYNC_SECONDS, "1")))
    except ValueError:
        return 1.0


def _run_experiment_cache_size() -> int:
    try:
        return max(0, int(os.environ.get(RUN_EXPERIMENT_CACHE_SIZE, "10000")))
    except ValueError:
        return 10000


def _enabled(variable: str) -> bool:
    return os.environ.get(variable, "true").strip().lower() not in ("0", "false", "no", "off")


def _share_request_user() -> bool:
    return _enabled(SHARE_REQUEST_USER)


PROXIED_ARTIFACTS_SCHEME = "mlflow-artifacts"


def in_process_artifact_repository(
    artifact_uri: str, tracking_uri: str | None = None, registry_uri: str | None = None
):
    """(16) The repository for `mlflow-artifacts:/<path>`: the artifacts destination's own at <path> when
    this process serves artifacts and its tracking URI is not http(s); MLflow's class otherwise."""
    from mlflow.server import ARTIFACTS_DESTINATION_ENV_VAR, SERVE_ARTIFACTS_ENV_VAR
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
    from mlflow.tracking._tracking_service.utils import get_tracking_uri
    from mlflow.utils.uri import validate_path_is_safe

    destination = os.environ.get(ARTIFACTS_DESTINATION_ENV_VAR)
    serving = os.environ.get(SERVE_ARTIFACTS_ENV_VAR, "false") == "true"
    tracking_scheme = urllib.parse.urlparse(tracking_uri or get_tracking_uri()).scheme
    parsed = urllib.parse.urlparse(artifact_uri)
    if not (serving and destination) or tracking_scheme in ("http", "https") or parsed.netloc:
        return MlflowArtifactsRepository(artifact_uri, tracking_uri=tracking_uri, registry_uri=registry_uri)
    # As MLflow's handlers: the URI's path below the destination, refused if it leaves it (".." etc.).
    path = parsed.path.lstrip("/")
    location = posixpath.join(destination.rstrip("/"), validate_path_is_safe(path)) if path else destination
    return get_artifact_repository(location, tracking_uri=tracking_uri, registry_uri=registry_uri)


def resolve_proxied_artifacts_in_process() -> None:
    """(16) MLflow's artifact repository registry opens `mlflow-artifacts:` URIs with the function above."""
    from mlflow.store.artifact import artifact_repository_registry

    artifact_repository_registry._artifact_repository_registry.register(
        PROXIED_ARTIFACTS_SCHEME, in_process_artifact_repository
    )


def _gateway_timing_passes() -> Callable:
    """(17) MLflow's `gateway_timing_middleware` (fastapi_app.py) times /gateway/ requests only; its prefix
    is found once, as MLflow finds it when it adds the middleware."""
    from mlflow.server.asgi_utils import get_routed_asgi_path
    from mlflow.server.handlers import _add_static_prefix
    from starlette.requests import Request

    prefix = _add_static_prefix(GATEWAY_PREFIX)

    def check(scope) -> contextlib.AbstractContextManager | None:
        return None if get_routed_asgi_path(Request(scope)).startswith(prefix) else contextlib.nullcontext()

    return check


def _workspace_context_passes() -> Callable:
    """(17) MLflow's `workspace_context_middleware` (fastapi_app.py) with workspaces off and no workspace
    header: `resolve_workspace_for_request_if_enabled` gives no workspace, which it binds for the request
    and clears after it, as here (the setting read on every request, as MLflow reads it)."""
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
    from mlflow.server.workspace_helpers import WORKSPACE_HEADER_NAME
    from mlflow.utils import workspace_context
    from starlette.requests import Request

    @contextlib.contextmanager
    def no_workspace():
        workspace_context.set_server_request_workspace(None)
        try:
            yield
        finally:
            workspace_context.clear_server_request_workspace()

    def check(scope) -> contextlib.AbstractContextManager | None:
        if (
            MLFLOW_ENABLE_WORKSPACES.get()
            or (Request(scope).headers.get(WORKSPACE_HEADER_NAME) or "").strip()
        ):
            return None
        return no_workspace()

    return check


def _permission_passes(native_routes: list) -> Callable:
    """(17) MLflow's basic-auth `fastapi_permission_middleware` (auth/__init__.py) hands a request on
    untouched when its route is unprotected, or has no FastAPI validator and is not refused as a native
    route without one (MLFLOW_BASIC_AUTH_FAIL_CLOSED): a route served by Flask, which checks it there.
    Decided by MLflow's own functions, once per method, path and root path, all the decision reads (the
    routes match on them); `native_routes`: the app's FastAPI routes at startup, at least those the
    middleware knows (a route it does not know only makes this decide less often that it passes)."""
    import mlflow.server.auth as auth
    from mlflow.environment_variables import MLFLOW_BASIC_AUTH_FAIL_CLOSED
    from mlflow.server.asgi_utils import get_routed_asgi_path
    from starlette.requests import Request

    fail_closed = MLFLOW_BASIC_AUTH_FAIL_CLOSED.get()
    decided: dict[tuple, bool] = {}

    def passes(scope, method: str, path: str) -> bool:
        if auth.is_unprotected_route(path):
            return True
        if auth._find_fastapi_validator(path, method) is not None:
            return False
        return not (
            fail_closed
            and auth._scope_matches_native_route(native_routes, scope)
            and not any(marker in path for marker in auth._KNOWN_UNGATED_FASTAPI_ROUTE_MARKERS)
        )

    def check(scope) -> contextlib.AbstractContextManager | None:
        path = get_routed_asgi_path(Request(scope))
        key = (scope["method"], path, scope["path"], scope.get("root_path", ""))
        if (passing := decided.get(key)) is None:
            if len(decided) >= PERMISSION_DECISIONS:  # bounded: paths with ids in them are many
                decided.clear()
            passing = decided[key] = passes(scope, scope["method"], path)
        return contextlib.nullcontext() if passing else None

    return check


class _PlainWhenPassing:
    """(17) One of MLflow's function middlewares (Starlette's `BaseHTTPMiddleware`), run as plain ASGI for a
    request it would only hand on: `passes(scope)` says so by giving what the function would do around the
    call (a context manager), else None, and the request takes the middleware as MLflow wrote it."""

    def __init__(self, app, dispatch, passes) -> None:
        from starlette.middleware.base import BaseHTTPMiddleware

        self.app, self.passes = app, passes
        self.middleware = BaseHTTPMiddleware(app, dispatch=dispatch)

    async def __call__(self, scope, receive, send) -> None:
        around = None
        if scope["type"] == "http":
            try:
                around = self.passes(scope)
            except Exception:  # MLflow's middleware decides, and raises if it must
                around = None
        if around is None:
            await self.middleware(scope, receive, send)
            return
        with around:
            await self.app(scope, receive, send)


def plain_middlewares(fastapi_app) -> list[str]:
    """(17) MLflow's function middlewares of `fastapi_app` that this file knows, each wrapped in
    `_PlainWhenPassing` with its condition; returns their names. Before the app first serves (Starlette
    builds its middleware stack then); after every route is added (the permission check's routes)."""
    from starlette.middleware import Middleware
    from starlette.middleware.base import BaseHTTPMiddleware

    def permission_condition() -> Callable:
        # Only when basic-auth's middleware is there: its module is loaded then.
        import mlflow.server.auth as auth

        return _permission_passes(auth._native_fastapi_routes(fastapi_app))

    conditions = {
        "add_gateway_timing_middleware.<locals>.gateway_timing_middleware": _gateway_timing_passes,
        "add_fastapi_workspace_middleware.<locals>.workspace_context_middleware": _workspace_context_passes,
        "add_fastapi_permission_middleware.<locals>.fastapi_permission_middleware": permission_condition,
    }
    wrapped, middlewares = [], []
    for middleware in fastapi_app.user_middleware:
        dispatch = middleware.kwargs.get("dispatch") if middleware.cls is BaseHTTPMiddleware else None
        condition = conditions.get(getattr(dispatch, "__qualname__", ""))
        if condition is None or middleware.args:
            middlewares.append(middleware)
            continue
        middlewares.append(Middleware(_PlainWhenPassing, dispatch=dispatch, passes=condition()))
        wrapped.append(dispatch.__name__)
    fastapi_app.user_middleware = middlewares
    fastapi_app.middleware_stack = None
    return wrapped


def _install_store_patches() -> None:
    """(14), (15) MLflow's SQL tracking store and its metric endpoints, faster with the same answers
    (fast_store.py, fast_metrics.py), each unless turned off."""
    if _enabled(FAST_STORE):
        import fast_store  # beside this file (/app in the image)

        fast_store.install()
        fast_store.install_history_endpoint()
        fast_store.install_search_runs_endpoint()
        fast_store.install_sampled_histories_endpoint()
        if _basic_auth():
            fast_store.install_auth_checks()
            fast_store.install_grants_query()
        if _sign_in():
            fast_store.install_sign_in_checks()
    if _enabled(FAST_METRICS):
        import fast_metrics  # beside this file (/app in the image)

        fast_metrics.install()  # after (14): its get-history endpoint replaces fast_store's


def _fastapi_app(app):
    """The FastAPI app inside uvicorn's wrappers (each keeps what it wraps in `.app`), or None."""
    from fastapi import FastAPI

    for _ in range(10):
        if isinstance(app, FastAPI):
            return app
        app = getattr(app, "app", None)
    return None


def _patch_uvicorn_worker() -> None:
    """In each serving process: (7), (8), (13), (14), (15), (16); SO_REUSEPORT socket (several workers); with
    auth, (5), (6), (10) and (15)'s hooks."""
    import uvicorn.server

    # Before uvicorn serves: it installs its signal handlers (the bound method) before startup().
    if drain := _env_seconds(DRAIN_SECONDS_ENV):
        _drain_on_exit_signal(drain)
    original = uvicorn.server.Server.startup

    async def startup(self: uvicorn.server.Server, sockets: list[socket.socket] | None = None) -> None:
        # The app is loaded by now; with basic-auth, MLflow's auth module is part of it.
        _install_store_patches()
        resolve_proxied_artifacts_in_process()
        if _enabled(STREAM_ARTIFACTS) and (fastapi_app := _fastapi_app(self.config.loaded_app)):
            import stream_artifacts  # beside this file (/app in the image)

            stream_artifacts.install(fastapi_app)
        if _enabled(PLAIN_MIDDLEWARE) and (fastapi_app := _fastapi_app(self.config.loaded_app)):
            plain_middlewares(fastapi_app)  # after every route is added
        if _sign_in() and (issuer := os.environ.get("OIDC_ISSUER")):
            allowed = {g.strip() for g in os.environ.get("OIDC_GROUP_NAME", "").split(",") if g.strip()}
            groups_claim = os.environ.get("OIDC_GROUPS_ATTRIBUTE", "groups")
            self.config.loaded_app = with_group_gate(self.config.loaded_app, issuer, allowed, groups_claim)
        if (
            _sign_in()
            and (token := os.environ.get(GATEWAY_TOKEN_ENV))
            and (account := os.environ.get(GATEWAY_ACCOUNT_ENV))
        ):
            accept_internal_gateway_token(token, account)  # before serving: blocking here is fine
        if secret_key := os.environ.get(READINESS_KEY_ENV):
            self.config.loaded_app = with_readiness(self.config.loaded_app, secret_key)
        if os.environ.get(METRICS_PORT_ENV):
            import metrics  # beside this file (/app in the image)

            self.config.loaded_app = metrics.instrument(self.config.loaded_app)
        if _env_seconds(DRAIN_SECONDS_ENV):
            self.config.loaded_app = with_drain(self.config.loaded_app, _draining)
        if (graceful := _env_seconds(GRACEFUL_SHUTDOWN_SECONDS_ENV)) is not None:
            self.config.timeout_graceful_shutdown = graceful
        if _basic_auth():
            if size := _run_experiment_cache_size():
                _cache_run_experiments(size)
            if _share_request_user():
                _share_authenticated_user()
            if _enabled(FAST_METRICS):
                import fast_metrics

                fast_metrics.install_auth_hooks()
            _sync_user_changes(_user_sync_seconds())
        if sockets and os.environ.get(_REUSEPORT) == "1":
            own = []
            for shared in sockets:
                if shared.family not in (socket.AF_INET, socket.AF_INET6):
                    own.append(shared)
                    continue
                sock = socket.socket(shared.family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.bind(shared.getsockname()[:2])
                own.append(sock)
                # The supervisor keeps the shared socket bound, never listening, so the kernel
                # only hands connections to the workers' sockets. This copy is not needed here.
                shared.close()
            # uvicorn closes the list it was given at shutdown: hand over ours.
            sockets[:] = own
        await original(self, sockets=sockets)

    uvicorn.server.Server.startup = startup  # type: ignore[method-assign]


def _uvicorn(argv: list[str]) -> int:
    import uvicorn.main

    try:
        uvicorn.main.main(argv, prog_name="uvicorn")
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


# uvicorn's exit status when it ran in this process (`mlflow server` itself ignores it).
_uvicorn_status: list[int] = []


class _Finished:
    """What `mlflow server` waits on once uvicorn, run in this process, has returned."""

    def __init__(self, returncode: int):
        self.returncode = returncode
        self.pid = os.getpid()

    def poll(self) -> int:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        return self.returncode

    def send_signal(self, signum: int) -> None:
        pass


def _is_uvicorn_command(cmd: object) -> bool:
    return isinstance(cmd, list) and [str(c) for c in cmd[1:3]] == ["-m", "uvicorn"]


def job_runner_separate() -> bool:
    """(12) Whether the job runner runs elsewhere (the jobs Deployment), not beside this server."""
    return os.environ.get(JOB_RUNNER_ENV, "") == "separate"


def _patch_job_runner_launch() -> None:
    """(12) `mlflow server` starts no job runner here: jobs.py runs the one runner of the cluster."""
    import mlflow.server.jobs.utils as job_utils

    def launch_elsewhere(env_map, server_proc_pid):
        print("serve.py: jobs are accepted here and run by the jobs Deployment (jobs.py)", file=sys.stderr)

    job_utils._launch_job_execution_runner = launch_elsewhere


def _patch_mlflow_server(workers: int) -> None:
    """Run the uvicorn that `mlflow server` would start as a child here, or through this file."""
    import mlflow.server
    from mlflow.environment_variables import MLFLOW_SERVER_ENABLE_JOB_EXECUTION

    original = mlflow.server._exec_cmd
    if job_runner_separate():
        _patch_job_runner_launch()
    # With a runner beside it, MLflow keeps its own process layout (the runner watches the server's PID).
    in_process = not MLFLOW_SERVER_ENABLE_JOB_EXECUTION.get() or job_runner_separate()

    # (12) `mlflow server` makes a new internal gateway token per start; the jobs pod must present the one
    # every serving pod accepts, the chart's (the tracking Secret's).
    gateway_token = os.environ.get(GATEWAY_TOKEN_ENV) if job_runner_separate() else None

    def exec_cmd(cmd, *args, extra_env=None, **kwargs):
        if not _is_uvicorn_command(cmd):
            return original(cmd, *args, extra_env=extra_env, **kwargs)
        if gateway_token:
            extra_env = {**(extra_env or {}), GATEWAY_TOKEN_ENV: gateway_token}
        uvicorn_args = [str(c) for c in cmd[3:]]
        if in_process:
            os.environ.update(extra_env or {})
            _patch_uvicorn_supervisor(workers)
            _patch_uvicorn_worker()  # the only worker when workers == 1
            _uvicorn_status.append(_uvicorn(uvicorn_args))
            return _Finished(_uvicorn_status[-1])
        child = [sys.executable, os.path.abspath(__file__), *uvicorn_args]
        return original(child, *args, extra_env={**(extra_env or {}), _UVICORN_CHILD: "1"}, **kwargs)

    mlflow.server._exec_cmd = exec_cmd


def _worker_count(args: list[str]) -> int:
    for i, arg in enumerate(args):
        if arg.startswith("--workers="):
            return int(arg.split("=", 1)[1])
        if arg in ("-w", "--workers") and i + 1 < len(args):
            return int(args[i + 1])
    return 4  # MLflow's default, never reached: with_default_workers() always sets it


def mlflow_version_problem(installed: str) -> str | None:
    """Why the server must not start with MLflow `installed`, or None when it is the tested one."""
    if installed == TESTED_MLFLOW_VERSION:
        return None
    return (
        f"serve.py: its patches of MLflow's internals were written and tested against MLflow "
        f"{TESTED_MLFLOW_VERSION}, and this is MLflow {installed}: refusing to start. Re-check serve.py, "
        f"stream_artifacts.py and their tests against {installed}, then set TESTED_MLFLOW_VERSION."
    )


def oidc_auth_version_problem(installed: str | None) -> str | None:
    """(11) Why the server must not start the sign-in plugin `installed` (None: missing), or None."""
    if installed == TESTED_OIDC_AUTH_VERSION:
        return None
    found = f"mlflow-oidc-auth {installed}" if installed else "no mlflow-oidc-auth"
    return (
        f"serve.py: --app-name {OIDC_APP} was tested with mlflow-oidc-auth {TESTED_OIDC_AUTH_VERSION} on "
        f"MLflow {TESTED_MLFLOW_VERSION}, and this is {found}: refusing to start. Test the pair, then set "
        f"TESTED_OIDC_AUTH_VERSION."
    )


def main(argv: list[str]) -> int:
    from importlib.metadata import PackageNotFoundError, version

    if problem := mlflow_version_problem(version("mlflow")):
        print(problem, file=sys.stderr)
        return 2
    if app_name(argv) == OIDC_APP:
        try:
            plugin = version("mlflow-oidc-auth")
        except PackageNotFoundError:
            plugin = None
        if problem := oidc_auth_version_problem(plugin):
            print(problem, file=sys.stderr)
            return 2
        os.environ[_AUTH_APP] = OIDC_APP
    if os.environ.pop(_UVICORN_CHILD, None) == "1":
        # Started by `mlflow server` in place of `python -m uvicorn` (job runner on).
        _patch_uvicorn_supervisor(_worker_count(argv))
        _patch_uvicorn_worker()
        return _uvicorn(argv)
    args = with_default_workers(argv)
    if os.environ.get(METRICS_PORT_ENV):
        import metrics

        # Before any process imports prometheus_client: workers write their values to files there, and
        # this process (which outlives them) answers the scrapes.
        metrics.prepare_multiprocess_dir()
        metrics.serve(int(os.environ[METRICS_PORT_ENV]), os.environ.get(METRICS_HOST_ENV, "0.0.0.0"))  # noqa: S104
    _patch_mlflow_server(_worker_count(args))
    from mlflow.cli import cli

    try:
        cli(["server", *args], prog_name="mlflow")
    except SystemExit as exit_:
        code = exit_.code
        status = code if isinstance(code, int) else (0 if code is None else 1)
        if status:
            return status
    return _uvicorn_status[-1] if _uvicorn_status else 0


if __name__ == "__mp_main__":
    # A uvicorn worker spawned by this file (multiprocessing re-imports the main module under this
    # name): patch before uvicorn's worker code runs.
    _patch_uvicorn_worker()

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
