"""An OTLP/HTTP trace export, byte for byte what an OpenTelemetry exporter sends to `<server>/v1/traces`
(`Content-Type: application/x-protobuf`, an ExportTraceServiceRequest), and the MLflow trace it becomes."""

from __future__ import annotations

import os
import time

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

TRACES_PATH = "/v1/traces"


def export(client: httpx.Client, experiment_id: str, span_name: str, headers: dict[str, str]) -> tuple[
    httpx.Response, str
]:  # fmt: skip
    """One span in one trace, exported to the experiment; returns the answer and the trace id (hex)."""
    trace_id, now = os.urandom(16), time.time_ns()
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=[KeyValue(key="service.name", value=AnyValue(string_value="app"))]
                ),
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            Span(
                                trace_id=trace_id,
                                span_id=os.urandom(8),
                                name=span_name,
                                kind=Span.SPAN_KIND_INTERNAL,
                                start_time_unix_nano=now - 5_000_000,
                                end_time_unix_nano=now,
                            )
                        ]
                    )
                ],
            )
        ]
    )
    answer = client.post(
        TRACES_PATH,
        content=request.SerializeToString(),
        headers={
            "Content-Type": "application/x-protobuf",
            "x-mlflow-experiment-id": experiment_id,
            **headers,
        },
    )
    return answer, trace_id.hex()
