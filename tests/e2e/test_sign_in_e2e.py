"""Single sign-on for real (issue 13): the chart's `tracking.auth.mode: oidc` server (mlflow-oidc-auth,
as pinned in the image) behind the chart's TLS terminator, signing people in through a local OpenID
provider (in place of Entra ID), and run Jobs through their projected ServiceAccount token (signed by
the local stand-in of the cluster's issuer).

Browser sign-in and its session cookie, group mapping (allowed, admin, outsider), sign-out, bearer
tokens for scripts and the CLI, the default permission, a run Job with no password, refused tokens
(expired, foreign issuer, forged signature, wrong audience or namespace), tokens validated with cached
keys (the provider down, requests still served), and no token in any log.

LLM judges under sign-in (issue 19): the stack's values let its AI Gateway call the fake LLM
(tests/e2e/judges.py); a judge, a GenAI evaluation and issue detection started as the UI starts them, and
online scoring, all reach the provider through the gateway.
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mlflow_oidc_auth.kubernetes import USERNAME_TEMPLATE

from local import LocalStack, oidc
from local.stack import SIGN_IN_SERVICES
from tests.e2e import otlp
from tests.e2e.conftest import own_stack
from tests.e2e.fake_llm import VERDICT, FakeLLM, fake_llm
from tests.e2e.judges import (
    ISSUE,
    ISSUE_REPLIES,
    JOB_DEADLINE,
    ONLINE_DEADLINE,
    TERMINAL,
    VALUES,
    Bearer,
    assessments,
    create_judge_endpoint,
    invoke_genai_evaluate,
    invoke_issue_detection,
    invoke_judge,
    log_traces,
    start_online_judge,
    wait_job,
)

# Every credential a test handles: none may appear in a log (checked last).
SEEN_CREDENTIALS: list[str] = []


@pytest.fixture(scope="module")
def sso_stack(helm_bin: str) -> Iterator[LocalStack]:
    with own_stack(
        "mlflow-aks-sso-e2e-",
        https=True,
        sign_in=True,
        helm=helm_bin,
        values=VALUES,
    ) as stack:
        yield stack


def browser(stack: LocalStack) -> httpx.Client:
    trust = ssl.create_default_context(cafile=str(stack.ca_bundle))
    return httpx.Client(base_url=stack.public_uri, verify=trust, timeout=30)


def sign_in(stack: LocalStack, user: str) -> tuple[httpx.Client, httpx.Response]:
    """What a browser does: the server's /login, the provider's form, back to the server's callback."""
    client = browser(stack)
    started = client.get("/login")
    assert started.status_code == 302, started.text
    authorize = started.headers["location"]
    assert authorize.startswith(oidc.issuer(stack.config.oidc_port) + "/oauth2/authorize?")
    query = urllib.parse.parse_qs(urllib.parse.urlparse(authorize).query)
    assert query["redirect_uri"] == [stack.redirect_uri] and query["client_id"] == [oidc.CLIENT_ID]
    callback = oidc.sign_in_at_provider(authorize, user)
    assert callback.startswith(stack.redirect_uri + "?")
    finished = client.get(callback)
    return client, finished


def session_cookie(response: httpx.Response) -> str:
    [cookie] = [c for c in response.headers.get_list("set-cookie") if c.startswith("session=")]
    SEEN_CREDENTIALS.append(cookie.split(";")[0].split("=", 1)[1])
    return cookie


def current_user(client: httpx.Client, **kwargs) -> httpx.Response:
    return client.get("/api/2.0/mlflow/users/current", **kwargs)


def bearer(token: str) -> dict[str, str]:
    SEEN_CREDENTIALS.append(token)
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    with fake_llm() as server:
        yield server


@dataclass(frozen=True)
class GatewayJudge:
    judge: object
    experiment_id: str
    trace_ids: list[str]
    traces_logged: float
    auth: Bearer


def _gateway_account(stack: LocalStack) -> str:
    """The sign-in plugin's account that the jobs pod's gateway calls count as (the chart's)."""
    return stack.server_spec().job_runner.env["MLFLOW_TRACKING_USERNAME"]


def _gateway_token(stack: LocalStack) -> str:
    """MLflow's internal gateway token, as the chart gives it to the jobs pod and the serving pods."""
    token = stack.server_spec().job_runner.env["_MLFLOW_INTERNAL_GATEWAY_AUTH_TOKEN"]
    SEEN_CREDENTIALS.append(token)
    return token


def _server_log(stack: LocalStack, needle: str) -> str:
    """The server's log lines with `needle` (for a failure's message)."""
    log = stack.workdir / "server" / "server.log"
    return "\n".join(line for line in log.read_text(errors="replace").splitlines() if needle in line)[-3000:]


@pytest.fixture(scope="module")
def gateway_judge(sso_stack, llm: FakeLLM) -> Iterator[GatewayJudge]:
    """As Alice (bearer token): the gateway's key, model and endpoint `judge` for the fake LLM, an LLM
    judge on `gateway:/judge` registered with online scoring on an experiment of hers, and two traces
    there. Set up early in the module, so that online scoring's minute passes during the other tests."""
    import mlflow
    import mlflow.tracking.fluent as fluent
    from mlflow.tracking import MlflowClient

    token = sso_stack.bearer_token("alice@local")
    auth = Bearer(bearer(token)["Authorization"].removeprefix("Bearer "))
    with pytest.MonkeyPatch.context() as env:
        # Other e2e modules' basic-auth credentials (the package's client_env) would win over the token.
        env.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        env.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        env.setenv("MLFLOW_TRACKING_TOKEN", token)
        env.setenv("MLFLOW_TRACKING_URI", sso_stack.tracking_uri)
        env.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")  # traces on the server at once
        # mlflow.set_experiment sets a process-wide experiment: put it back afterwards.
        env.setattr(fluent, "_active_experiment_id", fluent._active_experiment_id)
        env.setenv("MLFLOW_EXPERIMENT_ID", "")
        env.delenv("MLFLOW_EXPERIMENT_ID")
        mlflow.set_tracking_uri(sso_stack.tracking_uri)
        store = MlflowClient(sso_stack.tracking_uri)._tracking_client.store
        create_judge_endpoint(store, llm)
        create_judge_endpoint(store, llm, "alice-only")  # no grant to the jobs' gateway account
        # An admin lets judges use `judge`: USE for the account the jobs pod's gateway calls count as.
        admin = httpx.Client(base_url=sso_stack.tracking_uri, headers=bearer(sso_stack.bearer_token()))
        granted = admin.post(
            f"/api/2.0/mlflow/permissions/users/{_gateway_account(sso_stack)}/gateways/endpoints/judge",
            json={"permission": "USE"},
        )
        assert granted.status_code == 201, granted.text
        experiment = mlflow.set_experiment(f"sso-judges-{time.time_ns()}")
        judge, trace_ids = start_online_judge(experiment.experiment_id)
        yield GatewayJudge(judge, experiment.experiment_id, trace_ids, time.monotonic(), auth)


def test_browser_sign_in_gives_a_secure_httponly_samesite_session(sso_stack):
    client, finished = sign_in(sso_stack, "alice@local")
    assert finished.status_code == 302, finished.text
    attributes = [part.strip().lower() for part in session_cookie(finished).split(";")]
    assert "secure" in attributes and "httponly" in attributes and "samesite=lax" in attributes
    me = current_user(client)
    assert me.status_code == 200, me.text
    assert me.json()["username"] == "alice@local" and me.json()["is_admin"] is False
    assert {g["group_name"] for g in me.json()["groups"]} == {oidc.USERS_GROUP}
    # The same API without the session: refused.
    assert current_user(browser(sso_stack)).status_code == 401


def test_groups_decide_who_signs_in_and_who_is_admin(sso_stack):
    admin, _ = sign_in(sso_stack, "admin@local")
    assert current_user(admin).json()["is_admin"] is True
    outsider, finished = sign_in(sso_stack, "outsider@local")
    # Signed in at the provider, but in no allowed group: no session at the server.
    assert current_user(outsider).status_code == 401, finished.text
    users = admin.get("/api/2.0/mlflow/users").json()
    names = {u["username"] if isinstance(u, dict) else u for u in users}
    assert "outsider@local" not in names and "admin@local" in names


def test_sign_out_revokes_the_session(sso_stack):
    client, finished = sign_in(sso_stack, "bob@local")
    cookie = session_cookie(finished).split(";")[0]
    assert current_user(client).status_code == 200
    logout = client.get("/logout")
    assert logout.status_code == 302
    # A copy of the cookie kept from before (a stolen one, or another tab) no longer works either.
    replay = browser(sso_stack)
    assert current_user(replay, headers={"Cookie": cookie}).status_code == 401
    assert current_user(client).status_code == 401


def test_scripts_use_bearer_tokens_with_the_default_permission(sso_stack, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(sso_stack.ca_bundle))
    # Other e2e modules' basic-auth credentials (the package's client_env) would win over the token.
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    alice_token, bob_token = sso_stack.bearer_token("alice@local"), sso_stack.bearer_token("bob@local")
    bearer(alice_token), bearer(bob_token)

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", alice_token)
    alice = MlflowClient(tracking_uri=sso_stack.public_uri)
    experiment = alice.create_experiment(f"sso-alice-{time.time_ns()}")
    run = alice.create_run(experiment)
    alice.log_metric(run.info.run_id, "loss", 0.5, step=1)

    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", bob_token)
    bob = MlflowClient(tracking_uri=sso_stack.public_uri)
    # READ by default (the chart's defaultPermission): Bob sees Alice's run, and cannot write to it.
    assert bob.get_run(run.info.run_id).data.metrics["loss"] == 0.5
    with pytest.raises(MlflowException, match="Permission denied"):
        bob.log_metric(run.info.run_id, "loss", 0.1, step=2)
    denied = browser(sso_stack).post(
        "/api/2.0/mlflow/runs/log-metric",
        json={"run_id": run.info.run_id, "key": "loss", "value": 0.1, "timestamp": 0, "step": 2},
        headers={"Authorization": f"Bearer {bob_token}"},
    )
    assert denied.status_code == 403, denied.text
    assert [m.step for m in bob.get_metric_history(run.info.run_id, "loss")] == [1]
    # The UI's chart call, whose check reads the runs' experiments in one statement (serve.py change 14 in
    # sign-in mode): Bob reads Alice's points; a run that does not exist gets the plugin's own answer.
    charts = "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"
    chart = browser(sso_stack).get(
        charts,
        params={"run_ids": [run.info.run_id], "metric_key": "loss", "max_results": 320},
        headers={"Authorization": f"Bearer {bob_token}"},
    )
    assert chart.status_code == 200, chart.text
    assert [(m["run_id"], m["step"], m["value"]) for m in chart.json()["metrics"]] == [
        (run.info.run_id, 1, 0.5)
    ]
    missing = browser(sso_stack).get(
        charts,
        params={"run_ids": [run.info.run_id, "no-such-run"], "metric_key": "loss"},
        headers={"Authorization": f"Bearer {bob_token}"},
    )
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST", (
        missing.text
    )
    # His own experiments are his to write.
    own = bob.create_experiment(f"sso-bob-{time.time_ns()}")
    bob.log_metric(bob.create_run(own).info.run_id, "loss", 0.2)


def test_an_otlp_export_with_a_bearer_token_becomes_an_mlflow_trace(sso_stack, monkeypatch):
    """Traces from outside over OTLP/HTTP (docs/genai.md): the exporter sends the same access token as
    the MLflow client, through the TLS terminator, to `/v1/traces`."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_SERVER_CERT_PATH", str(sso_stack.ca_bundle))
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    token = sso_stack.bearer_token("alice@local")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", token)
    alice = MlflowClient(tracking_uri=sso_stack.public_uri)
    experiment = alice.create_experiment(f"sso-otlp-{time.time_ns()}")
    with browser(sso_stack) as http:
        refused, _ = otlp.export(http, experiment, "no token", {})
        answer, trace_id = otlp.export(http, experiment, "retrieve", bearer(token))
    assert refused.status_code == 401, refused.text
    assert answer.status_code == 200, answer.text
    traces = alice.search_traces(locations=[experiment])
    assert [span.name for trace in traces for span in trace.data.spans] == ["retrieve"]
    assert trace_id in traces[0].info.trace_id


def test_a_judge_started_from_the_ui_calls_the_ai_gateway(sso_stack, gateway_judge, llm: FakeLLM):
    """The UI's judge run (its AJAX endpoint, Alice's credential): the job in the jobs pod calls the AI
    Gateway on the tracking server, which calls the provider with the stored key."""
    started = time.monotonic()
    assert sso_stack.status()["jobs"]["running"], "the sign-in stack runs the chart's jobs Deployment"
    base, auth = sso_stack.tracking_uri, gateway_judge.auth
    trace_id = gateway_judge.trace_ids[0]
    [ui_job] = invoke_judge(base, auth, gateway_judge.experiment_id, gateway_judge.judge, [trace_id],
                            log_assessments=True)  # fmt: skip
    job = wait_job(base, auth, ui_job["job_id"], TERMINAL, JOB_DEADLINE)
    assert job["status"] == "SUCCEEDED", job
    # MLflow marks the job SUCCEEDED even when the judge failed: the failure is in the result.
    assert job["result"][trace_id]["failures"] == [], (job["result"], _server_log(sso_stack, "/gateway/"))
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        env.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        env.setenv("MLFLOW_TRACKING_TOKEN", sso_stack.bearer_token("alice@local"))
        from mlflow.tracking import MlflowClient

        feedbacks = assessments(MlflowClient(base), trace_id, "helpful")
    assert feedbacks and {(f.value, f.rationale) for f in feedbacks} == {
        (VERDICT["result"], VERDICT["rationale"])
    }
    call = llm.requests[0]
    assert call["path"] == "/v1/chat/completions" and call["model"] == "gpt-e2e-fake"
    assert call["authorization"] == "Bearer sk-e2e-fake"
    # serve.py change 16: the gateway's own traces of the calls, recorded in the serving process, are saved
    # whole. Their spans reach the database (the SQL store's log_spans); the copy MLflow's exporter uploads to
    # the trace's `mlflow-artifacts:` location is written too (when the exporter's start_trace comes before
    # log_spans: a race inside MLflow) instead of failing with the warning below.
    gateway_traces = _gateway_usage_traces(sso_stack, "judge")
    assert gateway_traces and all(trace.data.spans for trace, _ in gateway_traces), gateway_traces
    for trace, stored in gateway_traces:
        if stored is not None:
            assert [span["name"] for span in stored["spans"]] == [span.name for span in trace.data.spans]
    assert not _server_log(sso_stack, TRACE_LOST), _server_log(sso_stack, TRACE_LOST)
    copies = sum(stored is not None for _, stored in gateway_traces)
    print(f"gateway traces: {len(gateway_traces)}, with their artifact copy: {copies}")
    print(f"UI judge run under sign-in: {time.monotonic() - started:.1f}s")


# What MLflow logs when a trace recorded inside the server cannot be saved: the gateway's traces to an
# `mlflow-artifacts:` location with the database as tracking URI, before serve.py's change 16.
TRACE_LOST = "Failed to send trace to MLflow backend"


def _gateway_usage_traces(stack: LocalStack, endpoint: str, deadline: float = 30.0) -> list[tuple]:
    """The AI Gateway's own usage-tracking traces of `endpoint` (its experiment), read as an admin once any
    is there (the serving process exports them in the background), each with the trace data its
    `mlflow.artifactLocation` holds, downloaded through the server's artifact API (None: none there)."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.tracking import MlflowClient

    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        env.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        env.setenv("MLFLOW_TRACKING_TOKEN", stack.bearer_token())
        client = MlflowClient(stack.tracking_uri)
        config = client._tracking_client.store.get_gateway_endpoint(name=endpoint)
        assert config.usage_tracking and config.experiment_id, config
        until = time.monotonic() + deadline
        while not (traces := client.search_traces(locations=[config.experiment_id])):
            if time.monotonic() > until:
                break
            time.sleep(0.5)
        time.sleep(2)  # the exporter uploads (or logs its failure) after creating the trace
        stored = []
        for trace in traces:
            location = trace.info.tags["mlflow.artifactLocation"]
            assert location.startswith("mlflow-artifacts:/"), location
            try:
                repo = get_artifact_repository(location, tracking_uri=stack.tracking_uri)
                data = repo.download_trace_data()
            except MlflowException:
                data = None
            stored.append((trace, data))
    return stored


def test_the_internal_gateway_token_is_a_credential_on_gateway_routes_only_and_as_one_account(
    sso_stack, gateway_judge, llm: FakeLLM
):
    """The jobs' token works only on `/gateway/` and only as the gateway account, whatever name it is
    sent with (an admin's included); with no credential or a wrong token the gateway refuses."""
    import base64

    token, account = _gateway_token(sso_stack), _gateway_account(sso_stack)

    def basic(user: str, password: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}

    def chat(endpoint: str, headers: dict[str, str]) -> httpx.Response:
        body = {"model": endpoint, "messages": [{"role": "user", "content": "Is this helpful?"}]}
        url = f"{sso_stack.tracking_uri}/gateway/mlflow/v1/chat/completions"
        return httpx.post(url, json=body, headers=headers, timeout=30)

    calls = len(llm.requests)
    assert chat("judge", {}).status_code == 401
    assert chat("judge", basic(account, token[:-1] + ("0" if token[-1] != "0" else "1"))).status_code == 401
    assert chat("judge", basic(account, "")).status_code == 401
    assert len(llm.requests) == calls, "a refused call reached the provider"
    accepted = chat("judge", basic(account, token))
    assert accepted.status_code == 200, accepted.text
    assert json.loads(accepted.json()["choices"][0]["message"]["content"]) == VERDICT
    # Sent with an admin's name: still the account, which has no USE on Alice's other endpoint.
    assert chat("alice-only", basic("admin@local", token)).status_code == 403
    assert chat("alice-only", basic(account, token)).status_code == 403
    # Anywhere else the token is no credential at all.
    for user in (account, "admin@local"):
        search = httpx.get(
            f"{sso_stack.tracking_uri}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            headers=basic(user, token),
            timeout=10,
        )
        assert search.status_code == 401, search.text
    # The account is a non-admin service account of the plugin.
    admin = httpx.Client(base_url=sso_stack.tracking_uri, headers=bearer(sso_stack.bearer_token()))
    profile = admin.get(f"/api/2.0/mlflow/users/{account}").json()
    assert profile.get("is_service_account") is True and profile.get("is_admin") is False, profile


def _messages(call: dict) -> str:
    return "\n".join(str(message.get("content")) for message in call.get("messages", []))


def _provider_calls(llm: FakeLLM, *needles: str) -> list[dict]:
    """The calls that reached the fake LLM with any of `needles` in their messages (a test's own: online
    scoring calls it meanwhile)."""
    calls = [c for c in llm.requests if any(needle in _messages(c) for needle in needles)]
    assert calls, f"the fake LLM was not called about {needles}"
    # The provider was called with the key stored in the gateway, never with a token of the stack's.
    assert {(c["path"], c["model"], c["authorization"]) for c in calls} == {
        ("/v1/chat/completions", "gpt-e2e-fake", "Bearer sk-e2e-fake")
    }
    return calls


def test_a_genai_evaluation_started_from_the_ui_scores_through_the_ai_gateway(
    sso_stack, gateway_judge, llm: FakeLLM
):
    """The UI's "Run evaluation" (Alice's credential, a non-admin): the `invoke_genai_evaluate` job in the
    jobs pod runs mlflow.genai.evaluate into the run the request created, its judge calling the gateway."""
    from mlflow.tracking import MlflowClient

    started, topic = time.monotonic(), f"evaluate-{time.time_ns()}"
    base, auth = sso_stack.tracking_uri, gateway_judge.auth
    alice = MlflowClient(base)  # the module's environment is Alice's (gateway_judge)
    experiment_id = alice.create_experiment(f"sso-{topic}")
    trace_ids = log_traces(alice, experiment_id, topic, 2)
    invoked = invoke_genai_evaluate(base, auth, experiment_id, [gateway_judge.judge], trace_ids)
    job = wait_job(base, auth, invoked["job_id"], TERMINAL, JOB_DEADLINE)
    assert job["status"] == "SUCCEEDED", (job, _server_log(sso_stack, "/gateway/"))
    assert job["result"] == {"run_id": invoked["run_id"], "total_traces": 2, "scorer_count": 1}, job
    run = alice.get_run(invoked["run_id"])
    assert run.info.status == "FINISHED" and run.info.experiment_id == experiment_id
    assert run.data.tags["mlflow.runType"] == "genai_evaluate"
    assert run.data.tags["mlflow.genaiEvaluate.jobId"] == invoked["job_id"]
    for trace_id in trace_ids:
        [feedback] = assessments(alice, trace_id, "helpful")
        assert feedback.error is None, feedback.error  # a judge's failure is an assessment's error here
        assert (feedback.value, feedback.rationale) == (VERDICT["result"], VERDICT["rationale"])
        assert feedback.metadata["mlflow.assessment.sourceRunId"] == invoked["run_id"]
    linked = alice.search_traces(locations=[experiment_id], run_id=invoked["run_id"])
    assert {t.info.trace_id for t in linked} == set(trace_ids)
    assert run.inputs.dataset_inputs, "the evaluated traces are the run's dataset input"
    assert len(_provider_calls(llm, topic)) == 2  # one judge call per trace
    print(f"UI evaluation under sign-in: {time.monotonic() - started:.1f}s")


def test_issue_detection_started_from_the_ui_finds_issues_through_the_ai_gateway(
    sso_stack, gateway_judge, llm: FakeLLM
):
    """The UI's "Detect issues" with the gateway endpoint chosen (Alice's credential): the
    `invoke_issue_detection` job runs every step of the pipeline through the gateway, and the issue, its
    trace's issue assessment and the finished run are there."""
    from mlflow.tracking import MlflowClient

    started, topic = time.monotonic(), f"issues-{time.time_ns()}"
    base, auth = sso_stack.tracking_uri, gateway_judge.auth
    alice = MlflowClient(base)
    experiment_id = alice.create_experiment(f"sso-{topic}")
    [trace_id] = log_traces(alice, experiment_id, topic, 1)
    llm.replies = ISSUE_REPLIES
    try:
        invoked = invoke_issue_detection(base, auth, experiment_id, "judge", [trace_id])
        job = wait_job(base, auth, invoked["job_id"], TERMINAL, JOB_DEADLINE)
    finally:
        llm.replies = {}
    assert job["status"] == "SUCCEEDED", (job, _server_log(sso_stack, "/gateway/"))
    assert job["result"]["issues"] == 1 and job["result"]["total_traces_analyzed"] == 1, job
    run = alice.get_run(invoked["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.runType"] == "issue_detection"
    [issue] = alice._tracking_client.store.search_issues(experiment_id=experiment_id)
    assert issue.name == ISSUE["name"].removeprefix("Issue: ") and str(issue.severity) == ISSUE["severity"]
    assert issue.source_run_id == invoked["run_id"]
    # The trace is linked to the issue, with the annotation step's rationale.
    [reference] = [a for a in alice.get_trace(trace_id).info.assessments if a.name == issue.issue_id]
    assert reference.rationale == ISSUE_REPLIES["You are annotating a trace"]
    # The report MLflow logs to the run's artifacts, from the job's process (which has the database as
    # tracking URI: job_entry.py resolves the run's `mlflow-artifacts:` location to the artifact store).
    report = {a.path for a in alice.list_artifacts(invoked["run_id"])}
    assert {"summary.md", "issues.json", "metadata.json"} <= report, report
    [reported] = json.loads(Path(alice.download_artifacts(invoked["run_id"], "issues.json")).read_text())
    assert reported["name"] == issue.name and reported["issue_id"] == issue.issue_id, reported
    # Every step of the pipeline asked the provider, with the stored key.
    sent = [_messages(c) for c in _provider_calls(llm, topic, *ISSUE_REPLIES)]
    assert all(any(marker in text for text in sent) for marker in ISSUE_REPLIES), sent
    print(f"UI issue detection under sign-in: {time.monotonic() - started:.1f}s")


def test_leaving_the_allowed_groups_ends_api_access(sso_stack):
    """The plugin checks a bearer token's groups only when it creates the user; serve.py checks them on
    every request, so someone removed from the groups cannot go on with a fresh token."""
    port, user = sso_stack.config.oidc_port, f"carol-{time.time_ns()}@local"
    oidc.set_user(port, user, {"email": user, "groups": [oidc.USERS_GROUP]})
    assert _status(sso_stack, sso_stack.bearer_token(user)) == 200  # created on first use
    oidc.set_user(port, user, {"email": user, "groups": ["another-team"]})
    after = sso_stack.bearer_token(user)
    refused = httpx.get(
        f"{sso_stack.tracking_uri}/api/2.0/mlflow/experiments/search",
        params={"max_results": 1},
        headers=bearer(after),
        timeout=10,
    )
    assert refused.status_code == 403 and "PERMISSION_DENIED" in refused.text
    # No groups claim at all is no group either.
    oidc.set_user(port, user, {"email": user})
    assert _status(sso_stack, sso_stack.bearer_token(user)) == 403


def test_run_job_signs_in_with_its_service_account_token_and_no_password(sso_stack):
    result = sso_stack.run_project("train", f"sso-runs-{time.time_ns()}", {"n_samples": 300})
    assert result.returncode == 0, result.output[-3000:]
    assert result.run_id
    token = (sso_stack.workdir / "runs" / "volumes" / "tracking-token" / "token").read_text()
    claims = json.loads(_segment(token, 1))
    assert claims["aud"] == ["mlflow-tracking"] and claims["exp"] - claims["iat"] == 3600
    me = httpx.get(
        f"{sso_stack.tracking_uri}/api/2.0/mlflow/users/current", headers=bearer(token), timeout=10
    ).json()
    namespace, account = claims["sub"].split(":")[2:]
    assert me["username"] == f"{account}.{namespace}@serviceaccount.cluster.local"
    assert me["is_service_account"] is True and me["is_admin"] is False
    # The run is the Job's: it wrote it, with no password anywhere in its environment.
    admin = httpx.Client(base_url=sso_stack.tracking_uri, headers=bearer(sso_stack.bearer_token()))
    run = admin.get("/api/2.0/mlflow/runs/get", params={"run_id": result.run_id}).json()["run"]
    assert {m["key"] for m in run["data"]["metrics"]} >= {"accuracy", "f1"}
    # Tagged with the identity the server signed the Job in as, not the OS user of its process.
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["mlflow.user"] == me["username"]


def test_run_project_into_an_experiment_it_may_not_write_says_why(sso_stack, capsys):
    """`python -m local run-project` into the admin's experiment: the Job's identity may read it only."""
    import local.__main__ as cli

    experiment = f"sso-perm-{time.time_ns()}"
    admin = httpx.Client(base_url=sso_stack.tracking_uri, headers=bearer(sso_stack.bearer_token()))
    created = admin.post("/api/2.0/mlflow/experiments/create", json={"name": experiment})
    assert created.status_code == 200, created.text
    argv = ["--workdir", str(sso_stack.workdir), "run-project", "--experiment", experiment, "-e", "train"]
    assert cli.main([*argv, "-P", "n_samples=200"]) == 1
    printed = capsys.readouterr()
    assert "Permission denied" in printed.out  # what MLflow's client printed of the plugin's 403
    # The hint names the user the plugin signed the Job's token in as.
    token = (sso_stack.workdir / "runs" / "volumes" / "tracking-token" / "token").read_text()
    namespace, account = json.loads(_segment(token, 1))["sub"].split(":")[2:]
    user = USERNAME_TEMPLATE.format(name=account, namespace=namespace)
    assert f"the server refused to let {user!r}, the user runs log in as, write there" in printed.err
    where = f"as admin, in {sso_stack.browser_uri}/oidc/ui"
    assert f"give {user!r} EDIT on that experiment ({where})" in printed.err


def _segment(token: str, index: int) -> str:
    import base64

    part = token.split(".")[index]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)).decode()


def _status(stack: LocalStack, token: str) -> int:
    return httpx.get(
        f"{stack.tracking_uri}/api/2.0/mlflow/experiments/search",
        params={"max_results": 1},
        headers=bearer(token),
        timeout=10,
    ).status_code


def test_expired_foreign_forged_and_misdirected_tokens_are_status(sso_stack):
    key = sso_stack.secrets["run_token_key"]
    valid = dict(namespace="mlflow", service_account="mlflow-run", audience="mlflow-tracking")
    assert _status(sso_stack, oidc.service_account_token(key, **valid, expiration_seconds=600)) == 200
    expired = oidc.service_account_token(key, **valid, expiration_seconds=600, now=time.time() - 7200)
    assert _status(sso_stack, expired) == 401
    foreign_issuer = oidc.service_account_token(
        key, **valid, expiration_seconds=600, issuer_url="https://attacker.example"
    )
    assert _status(sso_stack, foreign_issuer) == 401
    # The right issuer, signed with a key that is not the issuer's.
    forged = oidc.service_account_token(oidc.new_signing_key(), **valid, expiration_seconds=600)
    assert _status(sso_stack, forged) == 401
    wrong_audience = oidc.service_account_token(
        key, **{**valid, "audience": "https://kubernetes.default.svc"}, expiration_seconds=600
    )
    assert _status(sso_stack, wrong_audience) == 401
    # Only the runs namespace's ServiceAccounts are run identities.
    other_namespace = oidc.service_account_token(
        key, **{**valid, "namespace": "kube-system"}, expiration_seconds=600
    )
    assert _status(sso_stack, other_namespace) == 401
    # A person's token with its signature altered.
    person = sso_stack.bearer_token("alice@local")
    header, payload, signature = person.split(".")
    tampered = f"{header}.{payload}.{signature[:-4]}{'AAAA' if not signature.endswith('AAAA') else 'BBBB'}"
    assert _status(sso_stack, tampered) == 401


def test_tokens_are_checked_with_cached_keys_not_a_call_to_the_provider(sso_stack):
    token = sso_stack.bearer_token("alice@local")
    assert _status(sso_stack, token) == 200
    assert SIGN_IN_SERVICES == ("oidc",)
    sso_stack.stop_oidc()  # the provider goes away: Entra ID unreachable
    try:
        started = time.monotonic()
        statuses = [_status(sso_stack, token) for _ in range(20)]
        elapsed = time.monotonic() - started
        assert statuses == [200] * 20
        assert elapsed < 10, f"20 requests took {elapsed:.1f}s with the provider down"
    finally:
        sso_stack.start_oidc()


def test_online_scoring_calls_the_ai_gateway_under_sign_in(sso_stack, gateway_judge):
    """Online scoring (registered when the module's first judge test started) scores both traces through
    the gateway. Checked before the backup test restores the database."""
    from mlflow.tracking import MlflowClient

    trace_ids = gateway_judge.trace_ids
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        env.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        env.setenv("MLFLOW_TRACKING_TOKEN", sso_stack.bearer_token("alice@local"))
        client = MlflowClient(sso_stack.tracking_uri)
        while time.monotonic() - gateway_judge.traces_logged < ONLINE_DEADLINE:
            if (
                assessments(client, trace_ids[1], "helpful")
                and len(assessments(client, trace_ids[0], "helpful")) >= 2
            ):
                break
            time.sleep(2)
        online = assessments(client, trace_ids[1], "helpful")
        assert online, (f"no online assessment in {ONLINE_DEADLINE}s", _server_log(sso_stack, "/gateway/"))
        assert all(f.value == VERDICT["result"] and f.error is None for f in online), [
            f.error for f in online
        ]
        # The trace the UI's judge scored got online scoring's assessment too.
        assert len(assessments(client, trace_ids[0], "helpful")) == 2
    after = time.monotonic() - gateway_judge.traces_logged
    print(f"online assessments under sign-in: {after:.1f}s after the traces")


def test_backups_hold_the_sign_in_database(sso_stack):
    """Users, groups and grants of the sign-in mode live in its own database: backed up and restored
    with the tracking database, in one snapshot."""
    import pymysql

    def sign_in_users() -> set[str]:
        settings = {**sso_stack.database_settings(), "database": sso_stack.config.oidc_database}
        connection = pymysql.connect(**settings)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT username FROM users")
                return {row[0] for row in cursor.fetchall()}
        finally:
            connection.close()

    before = sign_in_users()
    assert {"alice@local", "bob@local", "admin@local"} <= before
    taken = sso_stack.backup()
    assert int(taken["tables"]) > 20
    admin = browser(sso_stack)
    admin.headers.update(bearer(sso_stack.bearer_token()))
    deleted = admin.request("DELETE", "/api/2.0/mlflow/users", json={"username": "bob@local"})
    assert deleted.status_code == 200, deleted.text
    assert "bob@local" not in sign_in_users()
    restored = sso_stack.restore(taken["name"])
    assert restored["restored"] == taken["name"] and restored["left_out"] == []
    assert sign_in_users() == before

    # Back on basic auth (no sign-in database configured), the same backup restores everything else and
    # says it left the sign-in users out, instead of refusing.
    assert admin.request("DELETE", "/api/2.0/mlflow/users", json={"username": "bob@local"}).status_code == 200
    with sso_stack._lock():
        sso_stack.stop_server()
        sso_stack.config.sign_in = False
        try:
            basic = sso_stack._run_task("backup", sso_stack._backup_tool("restore", taken["name"]))
        finally:
            sso_stack.config.sign_in = True
        sso_stack._start_server()
    assert basic["restored"] == taken["name"] and basic["left_out"] == ["sign-in"], basic
    assert "bob@local" not in sign_in_users()  # left as it was


def test_no_token_or_session_is_ever_logged(sso_stack):
    assert len(SEEN_CREDENTIALS) >= 5
    logs = [p for p in sso_stack.workdir.rglob("*.log*") if p.is_file()]
    assert any(p.name == "server.log" for p in logs)
    for log in logs:
        text = log.read_text(errors="replace")
        for credential in SEEN_CREDENTIALS:
            # Any 24 characters of it (a JWT's signature, a cookie's value) would be a leak.
            assert credential[-24:] not in text, f"a credential is in {log}"
