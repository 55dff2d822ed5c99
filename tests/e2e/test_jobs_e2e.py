"""MLflow's server-side jobs on the local stack, against an LLM the test runs (issue 19, item 2).

The stack runs the chart's layout: the tracking server accepts jobs and the jobs Deployment's container
(images/tracking-server/jobs.py) runs them. The LLM is tests/e2e/fake_llm.py, an OpenAI-compatible
endpoint on 127.0.0.1 with a fixed verdict, reached the way MLflow reaches a real provider: an AI Gateway
secret (provider `openai`, its `api_base`) and model, an endpoint, and judges with `gateway:/<endpoint>`.

The stack's values let the gateway call the fake provider (tests/e2e/judges.py says how). Online scoring
scores a trace at the online-scoring scheduler's next run: MLflow runs it every minute, so the assessments
appear within ONLINE_DEADLINE of the traces.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from local.procs import spawn, stop
from tests.e2e.conftest import environ, own_stack
from tests.e2e.fake_llm import VERDICT, FakeLLM, fake_llm
from tests.e2e.judges import (
    JOB_DEADLINE,
    ONLINE_DEADLINE,
    TERMINAL,
    VALUES,
    assessments,
    create_judge_endpoint,
    get_job,
    invoke_judge,
    start_online_judge,
    wait_job,
)


@pytest.fixture(scope="module")
def llm() -> Iterator[FakeLLM]:
    with fake_llm() as server:
        yield server


@pytest.fixture(scope="module")
def jobs_stack(helm_bin: str, llm: FakeLLM):
    # The stack's clients; traces on the server at once.
    with own_stack("mlflow-aks-jobs-", helm=helm_bin, values=VALUES) as stack, \
            environ({**stack.client_env(), "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false"}):  # fmt: skip
        yield stack


@pytest.fixture
def active_experiment_restored(monkeypatch):
    """mlflow.set_experiment sets a process-wide experiment (a module global and MLFLOW_EXPERIMENT_ID):
    put both back after the test, or later tests' runs meet an experiment of a stack that is gone."""
    import mlflow.tracking.fluent as fluent

    monkeypatch.setattr(fluent, "_active_experiment_id", fluent._active_experiment_id)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID")


@pytest.mark.usefixtures("active_experiment_restored")
def test_judges_run_as_server_side_jobs(jobs_stack, llm: FakeLLM):
    import mlflow
    from mlflow.tracking import MlflowClient

    started = time.monotonic()
    env = jobs_stack.client_env()
    base, auth = (
        env["MLFLOW_TRACKING_URI"],
        (env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]),
    )
    mlflow.set_tracking_uri(base)
    client = MlflowClient(base)
    assert jobs_stack.status()["jobs"]["running"], "the local stack runs the chart's jobs Deployment"

    # The provider's key, stored in the gateway (encrypted with the stack's key), and an endpoint for judges.
    create_judge_endpoint(client._tracking_client.store, llm)
    experiment = mlflow.set_experiment("e2e-genai-jobs")
    # Online scoring on the experiment: every trace (sample rate 1).
    judge, trace_ids = start_online_judge(experiment.experiment_id)
    traces_logged = time.monotonic()

    # A judge run as the UI runs it (its AJAX endpoint: one job per batch of traces), logging assessments.
    [ui_job] = invoke_judge(base, auth, experiment.experiment_id, judge, trace_ids[:1], log_assessments=True)
    job = wait_job(base, auth, ui_job["job_id"], TERMINAL, JOB_DEADLINE)
    assert job["status"] == "SUCCEEDED", job
    print("UI job result:", json.dumps(job["result"])[:600])
    # Logged on the trace (online scoring may have added its own assessment by now: at least one).
    feedbacks = assessments(client, trace_ids[0], "helpful")
    assert feedbacks and {(f.value, f.rationale) for f in feedbacks} == {
        (VERDICT["result"], VERDICT["rationale"])
    }
    # The gateway called the provider with the stored key and model: the path a real provider gets.
    call = llm.requests[0]
    assert call["path"] == "/v1/chat/completions" and call["model"] == "gpt-e2e-fake"
    assert call["authorization"] == "Bearer sk-e2e-fake"
    assert "answer 0" in json.dumps(call["messages"])
    print(f"UI judge run: {time.monotonic() - traces_logged:.1f}s")

    # The runner dies in the middle of a job (the provider holds the answer back): after a restart the
    # job is run again to the end or failed, never left RUNNING.
    llm.delay = 30.0
    calls = len(llm.requests)
    [killed_job] = invoke_judge(
        base, auth, experiment.experiment_id, judge, trace_ids[1:], log_assessments=False
    )
    end = time.monotonic() + JOB_DEADLINE
    while len(llm.requests) == calls and time.monotonic() < end:  # the job is waiting on the provider
        time.sleep(0.2)
    assert get_job(base, auth, killed_job["job_id"])["status"] == "RUNNING"
    jobs_stack.kill_jobs()
    killed = time.monotonic()
    assert get_job(base, auth, killed_job["job_id"])["status"] == "RUNNING"  # nothing else would ever end it
    llm.delay = 0.0
    jobs_stack.start_jobs()
    job = wait_job(base, auth, killed_job["job_id"], TERMINAL, JOB_DEADLINE)
    assert job["status"] in ("SUCCEEDED", "FAILED"), job
    print(f"job after the runner's restart: {job['status']} in {time.monotonic() - killed:.1f}s")

    # A second runner (a pod replaced while the old one still terminates) waits for the first one's lock:
    # it recovers and claims nothing. (While online scoring has its minute, so this costs no time.)
    runner = jobs_stack.server_spec().job_runner
    log = jobs_stack.workdir / "server" / "jobs-second.log"
    second = spawn("jobs-second", runner.argv, env=runner.env, log=log, cwd=runner.cwd)
    try:
        end = time.monotonic() + JOB_DEADLINE
        while "waiting for the" not in log.read_text() and time.monotonic() < end:
            time.sleep(0.2)
        text = log.read_text()
        assert "waiting for the mlflow_aks_job_runner lock" in text and "holding" not in text, text[-2000:]
    finally:
        stop(second)

    # Online scoring: both traces get the judge's assessment (the first one a second one).
    while time.monotonic() - traces_logged < ONLINE_DEADLINE:
        if (
            len(assessments(client, trace_ids[1], "helpful")) >= 1
            and len(assessments(client, trace_ids[0], "helpful")) >= 2
        ):
            break
        time.sleep(2)
    online = assessments(client, trace_ids[1], "helpful")
    assert online and online[0].value == VERDICT["result"], f"no online assessment in {ONLINE_DEADLINE}s"
    assert len(assessments(client, trace_ids[0], "helpful")) == 2
    after, total = time.monotonic() - traces_logged, time.monotonic() - started
    print(f"online assessments: {after:.1f}s after the traces; test {total:.1f}s")
