"""serve.py's change 16: `mlflow-artifacts:` URIs that MLflow opens inside a serving process (the AI Gateway's
usage-tracking traces) resolve to the server's artifacts destination there, as MLflow's own handlers resolve
them, instead of failing for want of an http(s) tracking URI. In process, in milliseconds."""

from __future__ import annotations

import json

import pytest
from mlflow.exceptions import MlflowException
from mlflow.server import ARTIFACTS_DESTINATION_ENV_VAR, SERVE_ARTIFACTS_ENV_VAR
from mlflow.store.artifact import artifact_repository_registry
from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository
from mlflow.tracking._tracking_service import utils as tracking_utils

from tests.image_modules import load, run_worker_startup

DATABASE = "mysql+pymysql://mlflow@db:3306/mlflow"  # a serving process's tracking URI: its database
TRACE = "mlflow-artifacts:/7/traces/tr-0123/artifacts"  # what the SQL store tags a trace of experiment 7 with
NOT_HTTP = "When an mlflow-artifacts URI was supplied, the tracking URI must be a valid http or https URI"


@pytest.fixture
def serve(monkeypatch):
    return load(monkeypatch, "serve")


@pytest.fixture
def destination(monkeypatch, tmp_path):
    """A serving process's environment, as `mlflow server --serve-artifacts --artifacts-destination` sets
    it."""
    root = tmp_path / "artifacts"
    monkeypatch.setenv(SERVE_ARTIFACTS_ENV_VAR, "true")
    monkeypatch.setenv(ARTIFACTS_DESTINATION_ENV_VAR, root.as_uri())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", DATABASE)
    # The variable decides, as in a serving process: not a URI an earlier test of this worker set with
    # mlflow.set_tracking_uri (several e2e tests do), which MLflow prefers to the variable.
    monkeypatch.setattr(tracking_utils, "_tracking_uri", None)
    return root


@pytest.fixture
def installed(serve, monkeypatch):
    """Change 16 in MLflow's registry, MLflow's own class back after the test."""
    registry = artifact_repository_registry._artifact_repository_registry._registry
    monkeypatch.setitem(registry, "mlflow-artifacts", registry["mlflow-artifacts"])
    serve.resolve_proxied_artifacts_in_process()
    return serve


def _trace_data() -> dict:
    return {"spans": [{"name": "gateway/judge", "trace_id": "tr-0123"}]}


def test_mlflows_own_class_loses_a_trace_written_inside_the_server(destination):
    """The reproduction: what MLflow's tracing client does with a gateway trace in a serving process."""
    with pytest.raises(MlflowException, match=NOT_HTTP):
        artifact_repository_registry.get_artifact_repository(TRACE)


def test_a_trace_uri_opens_the_destination_at_its_path_and_its_data_lands_there(installed, destination):
    repo = artifact_repository_registry.get_artifact_repository(TRACE)
    assert isinstance(repo, LocalArtifactRepository)
    assert repo.artifact_uri == f"{destination.as_uri()}/7/traces/tr-0123/artifacts"
    repo.upload_trace_data(json.dumps(_trace_data()))
    # Where MLflow's trace handlers (`_get_trace_repo_from_uri`) read it back for the UI.
    written = destination / "7" / "traces" / "tr-0123" / "artifacts" / "traces.json"
    assert json.loads(written.read_text()) == _trace_data()


def test_the_tracing_clients_upload_of_a_gateway_trace_fails_without_and_lands_with_it(serve, destination):
    """MLflow's own code path: TracingClient._upload_trace_data, as its span exporter calls it for a trace
    the gateway records in a serving process (a client on the database; its store is not what is tested)."""
    from mlflow.entities import TraceData, TraceInfo, TraceLocation, TraceState
    from mlflow.tracing.client import TracingClient

    info = TraceInfo(
        trace_id="tr-0123",
        trace_location=TraceLocation.from_experiment_id("7"),
        request_time=0,
        state=TraceState.OK,
        tags={"mlflow.artifactLocation": TRACE},
    )
    client = TracingClient.__new__(TracingClient)
    client.tracking_uri = DATABASE
    with pytest.raises(MlflowException, match=NOT_HTTP):
        client._upload_trace_data(info, TraceData(spans=[]))
    registry = artifact_repository_registry._artifact_repository_registry._registry
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry, "mlflow-artifacts", registry["mlflow-artifacts"])
        serve.resolve_proxied_artifacts_in_process()
        client._upload_trace_data(info, TraceData(spans=[]))
    written = destination / "7" / "traces" / "tr-0123" / "artifacts" / "traces.json"
    assert json.loads(written.read_text()) == {"spans": []}


@pytest.mark.parametrize(
    "uri",
    [
        "mlflow-artifacts:/7/../../outside",
        "mlflow-artifacts:/7/%2e%2e/%2e%2e/outside",
        "mlflow-artifacts:/7/%252e%252e/outside",
        "mlflow-artifacts:/../outside",
        "mlflow-artifacts:/7/../..",
    ],
)
def test_a_path_leaving_the_destination_is_refused_as_mlflows_handlers_refuse_it(installed, destination, uri):
    with pytest.raises(MlflowException, match="Invalid path"):
        artifact_repository_registry.get_artifact_repository(uri)
    assert not (destination.parent / "outside").exists()


def test_the_destination_root_itself(installed, destination):
    repo = artifact_repository_registry.get_artifact_repository("mlflow-artifacts:/")
    assert isinstance(repo, LocalArtifactRepository) and repo.artifact_uri == destination.as_uri()


@pytest.mark.parametrize("tracking_uri", ["http://mlflow:5000", "https://mlflow.example.com/prefix"])
def test_an_http_tracking_uri_keeps_mlflows_class(installed, destination, monkeypatch, tracking_uri):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    repo = artifact_repository_registry.get_artifact_repository(TRACE)
    assert type(repo) is MlflowArtifactsRepository
    assert repo.artifact_uri == MlflowArtifactsRepository.resolve_uri(TRACE, tracking_uri)
    # Given explicitly (MLflow's clients pass their own), the same.
    explicit = installed.in_process_artifact_repository(TRACE, tracking_uri=tracking_uri)
    assert type(explicit) is MlflowArtifactsRepository and explicit.artifact_uri == repo.artifact_uri


def test_an_explicit_database_tracking_uri_resolves_in_process(installed, destination, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    repo = installed.in_process_artifact_repository(TRACE, tracking_uri=DATABASE)
    assert repo.artifact_uri == f"{destination.as_uri()}/7/traces/tr-0123/artifacts"


@pytest.mark.parametrize("unset", [SERVE_ARTIFACTS_ENV_VAR, ARTIFACTS_DESTINATION_ENV_VAR])
def test_a_process_that_serves_no_artifacts_keeps_mlflows_class(installed, destination, monkeypatch, unset):
    monkeypatch.delenv(unset)
    with pytest.raises(MlflowException, match=NOT_HTTP):
        artifact_repository_registry.get_artifact_repository(TRACE)


def test_a_uri_naming_a_host_keeps_mlflows_class(installed, destination):
    """`mlflow-artifacts://other-server/...` names another server's artifacts: not this destination's."""
    with pytest.raises(MlflowException, match=NOT_HTTP):
        artifact_repository_registry.get_artifact_repository("mlflow-artifacts://other:5000/7/x")
    assert not destination.exists()


def test_every_serving_process_installs_it_at_startup(serve, monkeypatch):
    """Change 16 is part of each uvicorn worker's startup, as serve.py patches it, before it serves."""
    import uvicorn

    registry = artifact_repository_registry._artifact_repository_registry._registry
    monkeypatch.setitem(registry, "mlflow-artifacts", registry["mlflow-artifacts"])
    for name in (serve.READINESS_KEY_ENV, serve.METRICS_PORT_ENV, serve.DRAIN_SECONDS_ENV):
        monkeypatch.delenv(name, raising=False)
    for name in (serve.STREAM_ARTIFACTS, serve.FAST_STORE, serve.FAST_METRICS):
        monkeypatch.setenv(name, "false")  # nothing else of MLflow's patched here
    monkeypatch.setenv(serve._AUTH_APP, serve.OIDC_APP)  # no basic-auth patches; no issuer: no group gate
    seen = []

    async def started(self, sockets=None):  # uvicorn's own startup: where the worker starts serving
        seen.append(registry["mlflow-artifacts"])

    monkeypatch.setattr(uvicorn.server.Server, "startup", started)
    serve._patch_uvicorn_worker()
    assert registry["mlflow-artifacts"] is MlflowArtifactsRepository
    run_worker_startup(lambda scope, receive, send: None)
    assert seen == [serve.in_process_artifact_repository]
