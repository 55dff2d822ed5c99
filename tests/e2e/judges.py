"""What the e2e tests of LLM judges share: the chart values that let a stack's AI Gateway call the fake LLM
(tests/e2e/fake_llm.py), the gateway objects a judge calls through, and the job API the UI uses.

The fake provider listens on loopback over plain HTTP, so the stack lets the gateway call a private
address (`llm.allowPrivateAddresses`, what the program sets for a private endpoint's CIDR) and the `http`
scheme (`MLFLOW_GATEWAY_API_BASE_ALLOWED_SCHEMES`); a real stack calls providers over HTTPS. Online scoring
scores a trace once it is `jobs.traceCompletionBufferSeconds` old (0 here, MLflow's 300 on a stack).
"""

from __future__ import annotations

import json
import time

import requests

from tests.e2e.fake_llm import FakeLLM

# The scheduler runs at each minute (huey crontab), then the scoring job starts a process (a few seconds).
ONLINE_DEADLINE = 90.0
JOB_DEADLINE = 60.0
TERMINAL = {"SUCCEEDED", "FAILED", "TIMEOUT", "CANCELED"}
VALUES = {
    "llm": {"allowPrivateAddresses": True},
    "jobs": {"traceCompletionBufferSeconds": 0},
    "tracking": {"extraEnv": [{"name": "MLFLOW_GATEWAY_API_BASE_ALLOWED_SCHEMES", "value": "http,https"}]},
}
# requests' `auth`: (user, password), or a callable that signs the request (a bearer token).
Auth = tuple[str, str] | requests.auth.AuthBase


class Bearer(requests.auth.AuthBase):
    def __init__(self, token: str):
        self.token = token

    def __call__(self, request):
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def create_judge_endpoint(store, llm: FakeLLM, endpoint: str = "judge") -> None:
    """The provider's key stored in the gateway (encrypted with the stack's key), a model on it, and
    `endpoint` for judges (`gateway:/<endpoint>`), through the tracking `store` of an MLflow client."""
    from mlflow.entities.gateway_endpoint import GatewayEndpointModelConfig, GatewayModelLinkageType

    secret = store.create_gateway_secret(
        secret_name=f"{endpoint}-provider-key",
        secret_value={"api_key": "sk-e2e-fake"},
        provider="openai",
        auth_config={"api_base": llm.url},
    )
    model = store.create_gateway_model_definition(
        name=f"{endpoint}-model", secret_id=secret.secret_id, provider="openai", model_name="gpt-e2e-fake"
    )
    store.create_gateway_endpoint(
        name=endpoint,
        model_configs=[
            GatewayEndpointModelConfig(
                model_definition_id=model.model_definition_id, linkage_type=GatewayModelLinkageType.PRIMARY
            )
        ],
    )


def start_online_judge(experiment_id: str) -> tuple[object, list[str]]:
    """The judge the e2e tests run (`helpful`, on `gateway:/judge`), registered on the experiment with online
    scoring of every trace (sample rate 1), and two traces for it: the judge and the traces' ids."""
    import mlflow
    from mlflow.genai.judges import make_judge
    from mlflow.genai.scorers import ScorerSamplingConfig

    judge = make_judge(
        name="helpful",
        instructions="Is {{ outputs }} a helpful answer to {{ inputs }}? Answer yes or no.",
        model="gateway:/judge",
        feedback_value_type=str,
    )
    judge.register(experiment_id=experiment_id).start(
        experiment_id=experiment_id, sampling_config=ScorerSamplingConfig(sample_rate=1.0)
    )
    trace_ids = []
    for i in range(2):
        with mlflow.start_span(name=f"answer-{i}") as span:
            span.set_inputs({"question": f"question {i}"})
            span.set_outputs({"answer": f"answer {i}"})
        trace_ids.append(span.trace_id)
    return judge, trace_ids


def get_job(base: str, auth: Auth, job_id: str) -> dict:
    answer = requests.get(f"{base}/ajax-api/3.0/jobs/{job_id}", auth=auth, timeout=10)
    answer.raise_for_status()
    return answer.json()


def wait_job(base: str, auth: Auth, job_id: str, until: set[str], deadline: float) -> dict:
    end = time.monotonic() + deadline
    while True:
        found = get_job(base, auth, job_id)
        if found["status"] in until or time.monotonic() > end:
            return found
        time.sleep(0.5)


def invoke_judge(
    base: str, auth: Auth, experiment_id: str, judge, trace_ids: list[str], *, log_assessments: bool
) -> list[dict]:
    """A judge run as the UI runs it (its AJAX endpoint: one job per batch of traces); the jobs it made."""
    invoked = requests.post(
        f"{base}/ajax-api/3.0/mlflow/scorer/invoke",
        auth=auth,
        json={
            "experiment_id": experiment_id,
            "serialized_scorer": json.dumps(judge.model_dump()),
            "trace_ids": trace_ids,
            "log_assessments": log_assessments,
        },
        timeout=30,
    )
    assert invoked.status_code == 200, invoked.text
    return invoked.json()["jobs"]


def assessments(client, trace_id: str, name: str) -> list:
    return [a for a in client.get_trace(trace_id).info.assessments if a.name == name]


def log_traces(client, experiment_id: str, topic: str, count: int) -> list[str]:
    """`count` one-span traces in `experiment_id` through `client`: a question on `topic` and its answer (a
    test finds the LLM calls about its own traces by the topic)."""
    trace_ids = []
    for i in range(count):
        question = {"question": f"{topic} question {i}"}
        span = client.start_trace(f"answer-{i}", inputs=question, experiment_id=experiment_id)
        client.end_trace(span.trace_id, outputs={"answer": f"{topic} answer {i}"})
        trace_ids.append(span.trace_id)
    return trace_ids


def invoke_genai_evaluate(
    base: str, auth: Auth, experiment_id: str, judges: list, trace_ids: list[str]
) -> dict:
    """The UI's "Run evaluation" (Evaluation runs tab, "Run judges"): its body as MLflow 3.17's bundle
    sends it (no scorer versions); the job's and the new run's ids."""
    invoked = requests.post(
        f"{base}/ajax-api/3.0/mlflow/genai/evaluate/invoke",
        auth=auth,
        json={
            "experiment_id": experiment_id,
            "trace_ids": trace_ids,
            "serialized_scorers": [json.dumps(judge.model_dump()) for judge in judges],
        },
        timeout=30,
    )
    assert invoked.status_code == 200, invoked.text
    return invoked.json()


# What the fake LLM answers at each step of issue detection (mlflow/genai/discovery): the triage judge fails
# the trace, the label and annotation steps get plain text, the cluster summary an issue of high severity.
ISSUE = {
    "name": "Issue: Answers ignore the question",
    "description": "The answer does not address what was asked.",
    "root_cause": "The answer-0 span returns a canned answer.",
    "example_indices": [0],
    "severity": "high",
    "categories": ["correctness"],
    "category_rationale": "correctness: the answer is unrelated to the question.",
}
ISSUE_REPLIES: dict[str, str | dict] = {
    # the triage judge's instructions (constants.CATEGORIES_INSTRUCTIONS)
    'For the "passed" key in your result': {
        "result": {"passed": "false", "categories": "correctness"},
        "rationale": "[off-topic answer] The answer does not address the question.",
    },
    "You extract short failure symptoms": "answer ignores the question asked",  # FAILURE_LABEL_SYSTEM_PROMPT
    "You are an expert at analyzing AI application failures": ISSUE,  # CLUSTER_SUMMARY_SYSTEM_PROMPT_BASE
    "You are annotating a trace": "The answer to the question was unrelated to it.",  # TRACE_ANNOTATION_...
}


def invoke_issue_detection(
    base: str, auth: Auth, experiment_id: str, endpoint: str, trace_ids: list[str]
) -> dict:
    """The UI's "Detect issues" with an AI Gateway endpoint chosen: its body as MLflow 3.17's bundle
    sends it (every category; the first provider's default model, which the endpoint overrides; no
    secret id)."""
    from mlflow.genai.discovery.constants import DEFAULT_CATEGORIES

    invoked = requests.post(
        f"{base}/ajax-api/3.0/mlflow/issues/invoke",
        auth=auth,
        json={
            "experiment_id": experiment_id,
            "trace_ids": trace_ids,
            "categories": DEFAULT_CATEGORIES,
            "provider": "openai",
            "model": "gpt-5.6-sol",
            "endpoint_name": endpoint,
        },
        timeout=30,
    )
    assert invoked.status_code == 200, invoked.text
    return invoked.json()
