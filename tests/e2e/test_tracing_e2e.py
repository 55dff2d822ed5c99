"""Traces from outside the cluster over OTLP/HTTP (docs/genai.md): an OpenTelemetry exporter sends to
`<tracking URL>/v1/traces` with the experiment in `x-mlflow-experiment-id` and the same credential as the
MLflow client. Basic auth here; the sign-in mode's bearer token in test_sign_in_e2e.py."""

from __future__ import annotations

import base64
import time

import httpx

from tests.e2e import otlp


def test_an_otlp_export_with_basic_auth_becomes_an_mlflow_trace(stack, client):
    experiment = client.create_experiment(f"otlp-{time.time_ns()}")
    user, password = stack.admin_credentials()
    basic = base64.b64encode(f"{user}:{password}".encode()).decode()
    with httpx.Client(base_url=stack.tracking_uri, timeout=30) as http:
        refused, _ = otlp.export(http, experiment, "no credential", {})
        answer, trace_id = otlp.export(
            http, experiment, "chat-completion", {"Authorization": f"Basic {basic}"}
        )
    assert refused.status_code == 401, refused.text
    assert answer.status_code == 200, answer.text
    traces = client.search_traces(locations=[experiment])
    assert [span.name for trace in traces for span in trace.data.spans] == ["chat-completion"]
    assert trace_id in traces[0].info.trace_id
