"""Helpers of the chart tests: example stack contexts, `helm template`/`helm lint` runs, object queries.

The contexts are what the Pulumi program passes to components/chart_values.py; the charts are always
rendered with the values that module produces, so the tests cover templates + values + charts together.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from components.chart_values import FlexibleServerContext, ProjectContext, Run, SetupContext

REPO_ROOT = Path(__file__).resolve().parent.parent
SETUP_CHART = REPO_ROOT / "charts" / "mlflow_setup"
PROJECT_CHART = REPO_ROOT / "charts" / "mlflow_project"
MYSQL_CHART = REPO_ROOT / "charts" / "mysql"

# The cluster's Kubernetes version (AKS default when kubernetesVersion is empty).
KUBERNETES_VERSION = "1.32.0"
NAMESPACE = "mlflow"
# Run Jobs' own namespace (config runsNamespace), as the program gives them.
RUNS_NAMESPACE = "mlflow-runs"
SETUP_RELEASE = "mlflow"
ACR = "mlflowacr7f3k.azurecr.io"
TRACKING_IMAGE = f"{ACR}/mlflow-tracking-server@sha256:{'3a' * 32}"
PROJECT_IMAGE = f"{ACR}/mlflow-project@sha256:{'5c' * 32}"
MYSQL_IMAGE = f"{ACR}/mlflow-mysql@sha256:{'9d' * 32}"
TLS_IMAGE = f"{ACR}/mlflow-tls-proxy@sha256:{'7e' * 32}"
# The public endpoint (components/public_endpoint.py): a static IP with a DNS label, in the platform group.
PUBLIC_HOSTNAME = "mlflow-mlflow-x7k2qz.westeurope.cloudapp.azure.com"
PUBLIC_IP_NAME = "mlflow-tracking-ip"
PUBLIC_IP_RESOURCE_GROUP = "mlflow-platform"
# The managed disk Pulumi keeps in the data resource group for MySQL, and the claim Pulumi binds to it
# (components/database_volume.py), which the chart mounts.
MYSQL_CLAIM = "mlflow-mysql-data"
MYSQL_DISK_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/mlflow-data"
    "/providers/Microsoft.Compute/disks/mlflow-mysql"
)
# The claim Pulumi binds to the certificate share (components/certificate_volume.py), which the TLS
# terminator mounts.
TLS_CLAIM = "mlflow-tls-certificates"
# `database: flexibleServer`: the server Pulumi creates in the data group (components/database_server.py),
# in the subnet delegated to it (components/private_network.py).
FLEXIBLE_SERVER = FlexibleServerContext(
    host="mlflow-mysql-7f3kq2zx.mysql.database.azure.com",
    user="mlflow",
    password="Flex#Admin/pass%41&x=y",
    server_name="mlflow-mysql-7f3kq2zx",
    resource_group="mlflow-data",
    network_cidr="10.224.16.0/24",
)
JOBS_POOL_LABEL = ("mlflow-aks/pool", "jobs")
JOBS_POOL_TAINT = "mlflow-aks/pool=jobs:NoSchedule"

# Secret values chosen to be awkward: URL-, YAML- and configparser-special characters.
SECRETS = {
    "projects_account_key": "c3RvcmFnZS1rZXk+Zm9yLXRlc3Rz/QQ==",
    "mysql_root_password": "root-Pw%with@odd:chars",
    "mysql_password": "Db#pass/word%41&x=y",
    "admin_password": "Admin'pass\"word: 1234",
    "flask_secret_key": "flask-secret-key-0123456789abcdef",
    "kek_passphrase": "kek 'pass\"phrase: with odd chars 0123456789",
    "webhook_key": "ZmVybmV0LWtleS1mb3ItdGVzdHMtMDEyMzQ1Njc4OWE=",
}


def setup_context(
    exposure: str = "private",
    source_ranges: tuple[str, ...] = (),
    mysql_existing_claim: str = MYSQL_CLAIM,
    tls_existing_claim: str = TLS_CLAIM,
) -> SetupContext:
    public = {}
    if exposure == "public":
        public = {
            "public_hostname": PUBLIC_HOSTNAME,
            "public_ip_name": PUBLIC_IP_NAME,
            "public_ip_resource_group": PUBLIC_IP_RESOURCE_GROUP,
            "tls_image": TLS_IMAGE,
        }
    return SetupContext(
        namespace=NAMESPACE,
        runs_namespace=RUNS_NAMESPACE,
        acr_login_server=ACR,
        tracking_image=TRACKING_IMAGE,
        mysql_image=MYSQL_IMAGE,
        tracking_identity_client_id="0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
        backup_identity_client_id="7a6b5c4d-3e2f-4a1b-9c8d-e7f6a5b4c3d2",
        storage_account="mlflowst7f3k",
        artifacts_container="mlflow-artifacts",
        # The share has a storage account of its own in the platform group (components/project_share.py).
        projects_account="mlflowfiles7f3k",
        projects_resource_group="mlflow-platform",
        projects_share="mlflow-projects",
        backups_container="mlflow-backups",
        exposure=exposure,
        source_ranges=source_ranges,
        mysql_existing_claim=mysql_existing_claim,
        tls_existing_claim=tls_existing_claim,
        **public,
        **SECRETS,
    )


SETUP_CONTEXTS = {
    "private": setup_context(),
    "private-own-run-password": replace(setup_context(), run_password="Run-user pass:word%2F"),
    "public-one-range": setup_context("public", ("203.0.113.0/24",)),
    "public-two-ranges": setup_context("public", ("198.51.100.7/32", "192.0.2.0/28")),
    # No certificate claim given (`helm install` by hand): the chart makes its own.
    "public-chart-tls-claim": setup_context("public", ("203.0.113.0/24",), tls_existing_claim=""),
    # No static disk: the MySQL claim provisions one dynamically (the chart's behaviour before the disk).
    "private-dynamic-disk": setup_context(mysql_existing_claim=""),
    # config trackingReplicas: 1 (no disruption budget can be met with one pod).
    "private-one-replica": replace(setup_context(), tracking_replicas=1),
    # config `database: flexibleServer`: no MySQL in the cluster, no disk, no backup CronJob.
    "private-flexible-server": replace(
        setup_context(mysql_existing_claim=""),
        mysql_root_password="",
        mysql_password="",
        flexible_server=FLEXIBLE_SERVER,
    ),
}

RUNS = {
    "train": Run("train-1", "train", "demo", {"n_samples": 1000, "seed": 7, "C": 0.5}),
    "evaluate-latest": Run("eval-latest", "evaluate", "demo_eval", {"experiment_name": "demo", "run_id": ""}),
    "no-parameters": Run("train-defaults", "train", "experiment with spaces", {}),
    "long-name": Run("r" * 48, "train", "demo", {"n_samples": 10}),
}


def project_context(run: Run, jobs_pool: bool) -> ProjectContext:
    return ProjectContext(
        namespace=NAMESPACE,
        acr_login_server=ACR,
        project_image=PROJECT_IMAGE,
        run=run,
        jobs_pool_label=JOBS_POOL_LABEL if jobs_pool else None,
        jobs_pool_taint=JOBS_POOL_TAINT if jobs_pool else None,
    )


def secret_strings(ctx: SetupContext) -> set[str]:
    """Every secret of a setup context, raw and in the encodings the charts use."""
    found = set()
    server_password = [ctx.flexible_server.password] if ctx.flexible_server else []
    values = [*(getattr(ctx, name) for name in SECRETS), ctx.effective_run_password(), *server_password]
    for value in filter(None, values):
        found |= {
            value,
            urllib.parse.quote(value, safe=""),
            urllib.parse.quote_plus(value),
            base64.b64encode(value.encode()).decode(),
        }
    return found


@dataclass(frozen=True)
class HelmResult:
    returncode: int
    stdout: str
    stderr: str


def run_helm(helm: str, args: list[str], values: Mapping[str, Any] | None, tmp_dir: Path) -> HelmResult:
    argv = [helm, *args]
    if values is not None:
        handle, name = tempfile.mkstemp(prefix="values-", suffix=".yaml", dir=tmp_dir)
        with os.fdopen(handle, "w") as values_file:
            yaml.safe_dump(dict(values), values_file)
        argv += ["-f", name]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    return HelmResult(done.returncode, done.stdout, done.stderr)


def template(helm: str, chart: Path, release: str, values: Mapping[str, Any], tmp_dir: Path) -> HelmResult:
    return run_helm(
        helm,
        [
            "template",
            release,
            str(chart),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBERNETES_VERSION,
        ],
        values,
        tmp_dir,
    )


def render(helm: str, chart: Path, release: str, values: Mapping[str, Any], tmp_dir: Path) -> list[dict]:
    """`helm template`; a failure is a test failure with helm's message."""
    result = template(helm, chart, release, values, tmp_dir)
    if result.returncode != 0:
        raise AssertionError(f"helm template {chart.name} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def lint(helm: str, chart: Path, values: Mapping[str, Any], tmp_dir: Path) -> HelmResult:
    return run_helm(
        helm,
        ["lint", "--strict", str(chart), "--namespace", NAMESPACE, "--kube-version", KUBERNETES_VERSION],
        values,
        tmp_dir,
    )


def of_kind(objects: Iterable[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: Iterable[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in of_kind(objects, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, (
        f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def pod_specs(objects: Iterable[dict]) -> Iterator[tuple[dict, dict]]:
    """(object, pod spec) of every workload and bare Pod."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet"):
            yield obj, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            yield obj, obj["spec"]


def containers(pod: dict) -> list[dict]:
    return [*(pod.get("initContainers") or []), *pod["containers"]]


def every_container(objects: Iterable[dict]) -> Iterator[tuple[dict, dict]]:
    """(object, container) of every container list anywhere in the objects, whatever their kind (a
    CronJob's job template, a helm test Pod, init and ephemeral containers): nothing is left out."""

    def walk(value: Any) -> Iterator[dict]:
        if isinstance(value, dict):
            for key, item in value.items():
                if key in ("containers", "initContainers", "ephemeralContainers") and isinstance(item, list):
                    yield from item
                else:
                    yield from walk(item)
        elif isinstance(value, list):
            for item in value:
                yield from walk(item)

    for obj in objects:
        for container in walk(obj):
            yield obj, container


def secret_data(secret: dict) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update({k: str(v) for k, v in (secret.get("stringData") or {}).items()})
    return data


def with_run(ctx: ProjectContext, **changes: Any) -> ProjectContext:
    return replace(ctx, run=replace(ctx.run, **changes))


def notes(helm: str, values: Mapping[str, Any], tmp_dir: Path, label: str) -> str:
    """charts/mlflow_setup's NOTES.txt as `helm install` prints it: `helm template` never renders it, so it
    is rendered as a ConfigMap's data in a copy of the chart."""
    chart = tmp_dir / f"notes-{label}"
    shutil.rmtree(chart, ignore_errors=True)
    shutil.copytree(SETUP_CHART, chart)  # the mysql subchart symlink becomes a copy
    body = "\n".join("    " + line for line in (chart / "templates" / "NOTES.txt").read_text().splitlines())
    (chart / "templates" / "zz-notes.yaml").write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n{body}\n"
    )
    values_file = tmp_dir / f"notes-{label}.json"
    values_file.write_text(json.dumps(values))
    done = subprocess.run(
        [helm, "template", SETUP_RELEASE, str(chart), "-n", NAMESPACE, "-f", str(values_file),
         "--show-only", "templates/zz-notes.yaml"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)["data"]["notes"]
