"""Readiness check of the tracking server: `python /app/ready.py --port <port>` (or `--url <base URL>`).

MLflow's /health answers OK as soon as the process serves, even when the database or the artifact
store is unreachable. This check goes further, through the running server itself, with its own
configuration and credentials, and exits non-zero unless all three succeed:

1. GET /health;
2. an authenticated API call that reads the tracking database (and the basic-auth user store);
3. an authenticated artifact listing through the server's proxy, which calls the artifact store.

Credentials: MLFLOW_TRACKING_USERNAME/PASSWORD, else MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD (the
server container's own environment). Standard library only, so that it starts fast on every probe.
Used by the Deployment's readinessProbe, by `helm test`, and by the local stack.
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

# A prefix that never holds artifacts: listing it costs one small request to the artifact store.
PROBE_ARTIFACT_PATH = "readiness-probe"


def _credentials() -> tuple[str, str]:
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or os.environ.get("MLFLOW_AUTH_ADMIN_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD") or os.environ.get("MLFLOW_AUTH_ADMIN_PASSWORD")
    if not user or not password:
        raise SystemExit("ready: no credentials (MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_AUTH_ADMIN_*)")
    return user, password


def _get(url: str, timeout: float, auth: tuple[str, str] | None) -> tuple[int, bytes]:
    request = urllib.request.Request(url)  # noqa: S310 - the URL is http(s) from the chart
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def check(base_url: str, timeout: float) -> list[str]:
    """Return the failed checks (empty when ready). `timeout` bounds the whole check."""
    deadline = time.monotonic() + timeout
    auth = _credentials()
    checks = [
        ("health", "/health", None),
        ("tracking database", "/api/2.0/mlflow/experiments/search?max_results=1", auth),
        ("artifact store", f"/api/2.0/mlflow-artifacts/artifacts?path={PROBE_ARTIFACT_PATH}", auth),
    ]
    failures = []
    for name, path, credentials in checks:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            failures.append(f"{name}: no time left")
            continue
        try:
            status, body = _get(base_url.rstrip("/") + path, remaining, credentials)
        except (OSError, urllib.error.URLError) as e:
            failures.append(f"{name}: {e}")
            continue
        if status != 200:
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
