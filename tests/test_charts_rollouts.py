"""Rollouts and node drains drop no request (issue 18.5), as charts/mlflow_setup renders the tracking pods.

A stopping pod is signalled while Kubernetes removes it from the endpoints; both containers keep serving
for `tracking.shutdown.drainSeconds`, then finish the transfers in flight, and the pod's grace period
covers both: these tests check the relation between the values, the pod, the server's environment and
the Caddyfile Caddy actually runs. tests/e2e/test_rollouts_e2e.py stops a real server that way under load.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import yaml

from components import chart_values
from components.chart_values import setup_values
from tests import chart_render as cr

VALUES = yaml.safe_load((cr.SETUP_CHART / "values.yaml").read_text())
SHUTDOWN = VALUES["tracking"]["shutdown"]
CADDYFILE = cr.REPO_ROOT / "images" / "tls-proxy" / "Caddyfile"
CADDY = cr.REPO_ROOT / ".venv" / "bin" / "caddy"
# cloud-provider-azure's default health probe of a LoadBalancer Service: every 5 s, 2 failures mark the node
# down (https://kubernetes-sigs.github.io/cloud-provider-azure/topics/loadbalancer/#custom-load-balancer-health-probe).
AZURE_PROBE_SECONDS = 5 * 2
# An odd case too: the transfer time rounds up (301 / 7 = 43 s), so the relation is computed, not a constant.
CASES = {
    "defaults": {},
    "odd": {"drainSeconds": 4, "largestTransferMiB": 301, "minTransferMiBPerSecond": 7, "exitSeconds": 2},
}


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rollout-charts")


@pytest.fixture(scope="module")
def render(helm_bin, tmp_dir):
    """render(context name, case) -> (objects, the shutdown values in effect): each rendered once."""
    done: dict[tuple[str, str], tuple[list[dict], dict]] = {}

    def rendered(name: str, case: str = "defaults") -> tuple[list[dict], dict]:
        if (name, case) not in done:
            values = setup_values(cr.SETUP_CONTEXTS[name])  # the program's (largestArtifactMib)
            given = {**values["tracking"].get("shutdown", {}), **CASES[case]}
            values["tracking"]["shutdown"] = given
            objects = cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, tmp_dir)
            done[(name, case)] = objects, {**SHUTDOWN, **given}
        return done[(name, case)]

    return rendered


def _pod(objects: list[dict]) -> dict:
    return cr.one(objects, "Deployment", chart_values.TRACKING_SERVICE)["spec"]["template"]["spec"]


def _env(objects: list[dict], container: str) -> dict[str, str]:
    found = next(c for c in _pod(objects)["containers"] if c["name"] == container)
    return {e["name"]: e["value"] for e in found["env"] if "value" in e}


def expected(shutdown: dict) -> tuple[int, int, int]:
    """(drain, transfer, grace) seconds from the values: what the pod must get."""
    drain = shutdown["drainSeconds"]
    transfer = math.ceil(shutdown["largestTransferMiB"] / shutdown["minTransferMiBPerSecond"])
    return drain, transfer, drain + transfer + shutdown["exitSeconds"]


@pytest.mark.parametrize("name", ["private", "public-one-range"])
@pytest.mark.parametrize("case", list(CASES))
def test_grace_period_covers_the_drain_and_the_largest_transfer(render, name, case):
    objects, shutdown = render(name, case)
    drain, transfer, grace = expected(shutdown)
    assert _pod(objects)["terminationGracePeriodSeconds"] == grace
    server = _env(objects, "mlflow")
    assert server["MLFLOW_AKS_DRAIN_SECONDS"] == str(drain)
    assert server["MLFLOW_AKS_GRACEFUL_SHUTDOWN_SECONDS"] == str(transfer)
    containers = {c["name"] for c in _pod(objects)["containers"]}
    assert containers == ({"mlflow", "tls"} if name.startswith("public") else {"mlflow"})
    if "tls" in containers:
        tls = _env(objects, "tls")
        assert tls["MLFLOW_AKS_SHUTDOWN_DELAY"] == f"{drain}s"
        assert tls["MLFLOW_AKS_GRACE_PERIOD"] == f"{transfer}s"


def test_default_drain_outlasts_the_azure_load_balancer_probe():
    """New connections keep arriving until the load balancer marks the node down (externalTrafficPolicy
    Local: a node without a ready endpoint fails the probe); the drain must outlast that."""
    assert SHUTDOWN["drainSeconds"] > AZURE_PROBE_SECONDS


def test_caddy_drains_then_waits_for_transfers_with_the_rendered_numbers(render):
    """The Caddyfile the sidecar runs, adapted by Caddy itself with the rendered env: Caddy's shutdown
    delay is the drain, its grace period the transfer time, and while draining answers close connections."""
    objects, shutdown = render("public-one-range", "odd")
    env = _env(objects, "tls")
    adapted = subprocess.run(
        [str(CADDY), "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    config = json.loads(adapted.stdout)["apps"]["http"]
    drain, transfer, _ = expected(shutdown)
    assert config["shutdown_delay"] == drain * 10**9
    assert config["grace_period"] == transfer * 10**9
    routes = json.dumps(config["servers"])
    assert '"{http.shutting_down}": ["true"]' in routes.replace("'", '"'), routes
    assert '"Connection": ["close"]' in routes, routes


@pytest.mark.parametrize("name", ["private", "public-one-range"])
def test_disruption_budget_lets_drains_evict_unready_pods(render, name):
    """A pod that is not Ready may be evicted even when the budget is spent: a crash-looping replica never
    blocks a node drain or an AKS upgrade."""
    objects, _ = render(name)
    budgets = cr.of_kind(objects, "PodDisruptionBudget")
    assert budgets
    for budget in budgets:
        assert budget["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow", budget["metadata"]["name"]
