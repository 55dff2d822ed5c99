"""Readiness check of the tracking server: `python /app/ready.py --port <port>` (or `--url <base URL>`).

MLflow's /health answers OK as soon as the process serves, even when the database or the artifact
store is unreachable. This check goes further, through the running server itself, and exits non-zero
unless everything answers:

1. GET /health;
2. then, with one of two identities:
   - **the platform's** (the Deployment's readiness probe, and the local stack): the pod's Flask secret
     key (MLFLOW_FLASK_SERVER_SECRET_KEY, from the platform's Secret) proves the caller to serve.py's
     readiness endpoint, which checks the tracking database, the basic-auth user store and the artifact
     store with the server's own stores. No user's password is involved: an admin changing the admin
     password (good practice) never makes a pod NotReady;
   - **a client's** (`helm test`): with MLFLOW_TRACKING_USERNAME/PASSWORD set, an authenticated API
     call that reads the tracking database and an artifact listing through the server's proxy, the
     path and credentials a run Job uses.

Standard library only (plus serve.py's constants), so that it starts fast on every probe.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import (  # beside this file in the image (/app) and in images/tracking-server
    READINESS_ARTIFACT_PATH,
    READINESS_HEADER,
    READINESS_KEY_ENV,
    READINESS_PATH,
    readiness_token,
)


def _get(url: str, timeout: float, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - the URL is http(s) from the chart
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _client_checks(user: str, password: str) -> list[tuple[str, str, dict[str, str]]]:
    auth = _basic(user, password)
    return [
        ("tracking database", "/api/2.0/mlflow/experiments/search?max_results=1", auth),
        ("artifact store", f"/api/2.0/mlflow-artifacts/artifacts?path={READINESS_ARTIFACT_PATH}", auth),
    ]


def _platform_failures(status: int, body: bytes) -> list[str]:
    """serve.py's answer: {"ready": bool, "checks": {name: "ok" | what failed}}."""
    try:
        checks = json.loads(body)["checks"]
    except (ValueError, KeyError, TypeError):
        return [f"platform readiness: HTTP {status} {body[:200]!r}"]
    failures = [f"{name}: {result}" for name, result in checks.items() if result != "ok"]
    return failures or ([] if status == 200 else [f"platform readiness: HTTP {status}"])


def check(base_url: str, timeout: float, environ: dict[str, str] | None = None) -> list[str]:
    """Return the failed checks (empty when ready). `timeout` bounds the whole check."""
    environ = dict(os.environ if environ is None else environ)
    deadline = time.monotonic() + timeout
    user, password = environ.get("MLFLOW_TRACKING_USERNAME"), environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        checks = _client_checks(user, password)
    elif secret_key := environ.get(READINESS_KEY_ENV):
        checks = [("platform readiness", READINESS_PATH, {READINESS_HEADER: readiness_token(secret_key)})]
    else:
        raise SystemExit(f"ready: no identity ({READINESS_KEY_ENV}, or MLFLOW_TRACKING_USERNAME/PASSWORD)")
    failures = []
    for name, path, headers in [("health", "/health", {}), *checks]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            failures.append(f"{name}: no time left")
            continue
        if path == READINESS_PATH:  # the server answers within our remaining time, naming what is slow
            path = f"{path}?timeout={max(1.0, remaining - 1.0):.1f}"
        try:
            status, body = _get(base_url.rstrip("/") + path, remaining, headers)
        except (OSError, urllib.error.URLError) as e:
            failures.append(f"{name}: {e}")
            continue
        if path.startswith(READINESS_PATH):
            failures += _platform_failures(status, body)
        elif status != 200:
            failures.append(f"{name}: HTTP {status} {body[:200]!r}")
        elif path != "/health":
            try:
                json.loads(body)  # a proxy or error page would not be JSON
            except ValueError:
                failures.append(f"{name}: not a JSON answer {body[:200]!r}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--port", type=int, help="server port on 127.0.0.1 (in-pod readiness)")
    target.add_argument("--url", help="base URL of the server (helm test, local stack)")
    parser.add_argument("--timeout", type=float, default=9.0, help="seconds for the whole check")
    args = parser.parse_args(argv)
    base_url = args.url or f"http://127.0.0.1:{args.port}"
    failures = check(base_url, args.timeout)
    for failure in failures:
        print(f"not ready: {failure}", file=sys.stderr)
    if not failures:
        print("ready")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
