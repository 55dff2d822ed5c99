"""The tracking server's Prometheus metrics on the real stack: their own port, bounded labels, real counts."""

from __future__ import annotations

import re
import uuid

import httpx

API = "/api/2.0/mlflow/experiments/search"


def _metrics(stack) -> str:
    answer = httpx.get(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.text


def _count(text: str, endpoint: str, method: str, status: str) -> float:
    pattern = (
        r"^mlflow_http_requests_total\{"
        + ",".join(
            rf'{k}="{re.escape(v)}"'
            for k, v in sorted({"endpoint": endpoint, "method": method, "status": status}.items())
        )
        + r"\} ([0-9.e+]+)$"
    )
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_requests_by_endpoint_and_status(stack):
    auth = stack.admin_credentials()
    before = _metrics(stack)
    with httpx.Client(base_url=stack.tracking_uri, timeout=30) as http:
        for _ in range(3):
            assert http.get(API, params={"max_results": 1}, auth=auth).status_code == 200
        assert http.get(API, params={"max_results": 1}).status_code == 401
    after = _metrics(stack)
    assert _count(after, API, "GET", "200") - _count(before, API, "GET", "200") == 3
    assert _count(after, API, "GET", "401") - _count(before, API, "GET", "401") == 1
    # Latency by endpoint (a histogram) and the requests in flight (the scrape itself is not counted).
    assert re.search(
        rf'^mlflow_http_request_duration_seconds_bucket\{{endpoint="{API}",le="0.5",method="GET"\}}',
        after,
        re.M,
    )
    assert re.search(r"^mlflow_http_requests_in_flight [0-9.]+$", after, re.M)


def test_labels_stay_bounded_whatever_the_client_asks_for(stack):
    odd = f"/api/2.0/mlflow/no-such-route/{uuid.uuid4().hex}"
    artifact = f"/api/2.0/mlflow-artifacts/artifacts/0/{uuid.uuid4().hex}/artifacts/x.bin"
    with httpx.Client(base_url=stack.tracking_uri, timeout=30, auth=stack.admin_credentials()) as http:
        http.get(odd)
        http.get(artifact)
    text = _metrics(stack)
    assert odd not in text and uuid.UUID(artifact.split("/")[6]).hex not in text
    assert 'endpoint="other"' in text
    assert 'endpoint="/api/2.0/mlflow-artifacts/artifacts/{path}"' in text


def test_metrics_are_not_on_the_server_port(stack):
    """The Service exposes the server's port only; /metrics is not one of its routes."""
    answer = httpx.get(f"{stack.tracking_uri}/metrics", auth=stack.admin_credentials(), timeout=10)
    assert "mlflow_http_requests_total" not in answer.text
    assert stack.metrics_port != stack.config.server_port
