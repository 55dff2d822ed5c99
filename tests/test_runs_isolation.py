"""Run Jobs in a namespace of their own (issue 10.4), as charts/mlflow_setup and charts/mlflow_project
render them with the program's values: only what a run needs is there, runs reach DNS and the
tracking server and nothing else (no IMDS, no MySQL, no internet), and a quota and limits bound them.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from components import chart_values
from components.chart_values import project_values, setup_values
from tests import chart_render as cr


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("runs-isolation")


@pytest.fixture(scope="module")
def setup(helm_bin, tmp_dir) -> list[dict]:
    return cr.render(
        helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, setup_values(cr.SETUP_CONTEXTS["private"]), tmp_dir
    )


@pytest.fixture(scope="module")
def run_job(helm_bin, tmp_dir) -> dict:
    run = cr.RUNS["train"]
    values = project_values(cr.project_context(run, jobs_pool=True))
    [job] = cr.of_kind(cr.render(helm_bin, cr.PROJECT_CHART, run.name, values, tmp_dir), "Job")
    return job


def in_runs_namespace(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["metadata"].get("namespace") == cr.RUNS_NAMESPACE]


def test_runs_namespace_holds_only_what_a_run_needs(setup):
    found = sorted((o["kind"], o["metadata"]["name"]) for o in in_runs_namespace(setup))
    assert found == sorted(
        [
            ("Secret", chart_values.RUN_CREDENTIALS_SECRET),
            ("PersistentVolumeClaim", chart_values.PROJECTS_CLAIM),
            ("ServiceAccount", "mlflow-run"),
            ("NetworkPolicy", "mlflow-runs"),
            ("NetworkPolicy", "mlflow-runs-default-deny"),
            ("ResourceQuota", "mlflow-runs"),
            ("LimitRange", "mlflow-runs"),
        ]
    )
    ctx = cr.SETUP_CONTEXTS["private"]
    run_credentials = cr.secret_data(cr.one(setup, "Secret", chart_values.RUN_CREDENTIALS_SECRET))
    assert run_credentials == {
        "username": chart_values.RUN_USERNAME,
        "password": ctx.effective_run_password(),
    }
    # None of the platform's secrets: MySQL's, the admin password, the Flask key, the project share's key
    # (who may install a run may read every Secret of the namespace, Helm's own included).
    for secret in cr.of_kind(in_runs_namespace(setup), "Secret"):
        values = set(cr.secret_data(secret).values())
        for platform_secret in (
            ctx.mysql_root_password,
            ctx.mysql_password,
            ctx.admin_password,
            ctx.flask_secret_key,
            ctx.projects_account_key,
        ):
            assert not any(platform_secret in value for value in values), secret["metadata"]["name"]
    # The project volume is bound from the runs namespace, and mounted with the key kept in the platform's.
    pv = cr.one(setup, "PersistentVolume")
    assert pv["spec"]["claimRef"] == {"name": chart_values.PROJECTS_CLAIM, "namespace": cr.RUNS_NAMESPACE}
    ref = pv["spec"]["csi"]["nodeStageSecretRef"]
    assert ref["namespace"] == cr.NAMESPACE
    share = [s for s in cr.of_kind(setup, "Secret") if s["metadata"]["name"] == ref["name"]]
    assert [s["metadata"]["namespace"] for s in share] == [cr.NAMESPACE]
    assert cr.secret_data(share[0])["azurestorageaccountkey"] == ctx.projects_account_key
    assert pv["spec"]["csi"]["volumeHandle"].endswith(f"#{cr.RUNS_NAMESPACE}")


def test_a_run_job_finds_everything_it_uses_in_its_namespace(setup, run_job):
    pod = run_job["spec"]["template"]["spec"]
    names = {(o["kind"], o["metadata"]["name"]) for o in in_runs_namespace(setup)}
    assert ("ServiceAccount", pod["serviceAccountName"]) in names
    for env in pod["containers"][0]["env"]:
        if "valueFrom" in env:
            assert ("Secret", env["valueFrom"]["secretKeyRef"]["name"]) in names
    for volume in pod["volumes"]:
        if "persistentVolumeClaim" in volume:
            assert ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]) in names


def test_runs_reach_dns_and_the_tracking_server_only(setup, run_job):
    labels = run_job["spec"]["template"]["metadata"]["labels"]
    policy = cr.one(setup, "NetworkPolicy", "mlflow-runs")
    assert all(labels.get(k) == v for k, v in policy["spec"]["podSelector"]["matchLabels"].items())
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"].get("ingress", []) == []
    dns, tracking = policy["spec"]["egress"]
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ]
    assert {p["port"] for p in dns["ports"]} == {53}
    [peer] = tracking["to"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": cr.NAMESPACE}}
    deployment = cr.one(setup, "Deployment", chart_values.TRACKING_SERVICE)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert all(pod_labels.get(k) == v for k, v in peer["podSelector"]["matchLabels"].items())
    assert tracking["ports"] == [{"protocol": "TCP", "port": chart_values.TRACKING_SERVICE_PORT}]
    # No ipBlock anywhere: not the internet, not IMDS (169.254.169.254) or the Azure host (168.63.129.16).
    assert "ipBlock" not in str(policy["spec"]["egress"])
    # Anything else started in the namespace has no network at all.
    deny = cr.one(setup, "NetworkPolicy", "mlflow-runs-default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_quota_and_limits_bound_the_runs_and_a_default_run_fits(setup, run_job):
    quota = cr.one(setup, "ResourceQuota", "mlflow-runs")["spec"]["hard"]
    for key in ("requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "pods", "count/jobs.batch"):
        assert key in quota
    # Runs open nothing to the outside.
    assert quota["services.loadbalancers"] == "0"
    [limits] = cr.one(setup, "LimitRange", "mlflow-runs")["spec"]["limits"]
    assert limits["type"] == "Container" and {"default", "defaultRequest", "max"} <= set(limits)
    resources = run_job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert _cpu(resources["limits"]["cpu"]) <= _cpu(limits["max"]["cpu"])
    assert _memory(resources["limits"]["memory"]) <= _memory(limits["max"]["memory"])
    assert _cpu(resources["requests"]["cpu"]) <= _cpu(quota["requests.cpu"])
    assert _memory(resources["limits"]["memory"]) <= _memory(quota["limits.memory"])
    # Ephemeral storage (scratch volumes, logs: the nodes' disks) is bounded like memory, and a container
    # that sets none gets a default, which a quota on it requires (issue 18.6).
    for bound in ("requests", "limits"):
        assert _memory(resources[bound]["ephemeral-storage"]) <= _memory(quota[f"{bound}.ephemeral-storage"])
    assert _memory(resources["limits"]["ephemeral-storage"]) <= _memory(limits["max"]["ephemeral-storage"])
    assert {"ephemeral-storage"} <= set(limits["default"]) & set(limits["defaultRequest"])
    assert _memory(limits["defaultRequest"]["ephemeral-storage"]) <= _memory(
        limits["default"]["ephemeral-storage"]
    )


def test_without_a_runs_namespace_nothing_namespace_wide_is_added(helm_bin, tmp_dir):
    """`helm install` by hand with one namespace: runs are still confined by their own policy, but no
    quota or default-deny lands on the platform's namespace."""
    ctx = replace(cr.SETUP_CONTEXTS["private"], runs_namespace="")
    objects = cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, setup_values(ctx), tmp_dir)
    assert in_runs_namespace(objects) == []
    assert cr.of_kind(objects, "ResourceQuota") == [] and cr.of_kind(objects, "LimitRange") == []
    names = {p["metadata"]["name"] for p in cr.of_kind(objects, "NetworkPolicy")}
    assert "mlflow-runs" in names and "mlflow-runs-default-deny" not in names


def _cpu(value: str | int | float) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _memory(value: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(value[:-2]) * units[value[-2:]] if value[-2:] in units else int(value)
