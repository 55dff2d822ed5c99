"""Integration: the values the program's Helm releases receive (under mocks) render both charts.

The mocked run records each `helm.v3.Release`'s values; secrets are unwrapped to their plain values
(they are mock values) and fed to `helm template` exactly as the release would pass them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi_mocks import REPO_ROOT, ProgramRun, plain, run_program

from components import chart_values
from components.chart_values import ImageRef
from tests.chart_render import every_container

KUBERNETES_VERSION = "1.32.0"
RUNS = [
    {"name": "train-demo", "entryPoint": "train", "experiment": "demo", "parameters": {"C": 0.5}},
    {
        "name": "eval-demo",
        "entryPoint": "evaluate",
        "experiment": "demo_eval",
        "parameters": {"experiment_name": "demo"},
    },
]
CONFIGURATIONS = {
    "private": {"runs": RUNS},
    "public-no-jobs-pool": {
        "runs": RUNS[:1],
        "exposure": "public",
        "allowedSourceRanges": ["203.0.113.0/24"],
        "jobsNodePool": False,
    },
}


@pytest.fixture(scope="module", params=list(CONFIGURATIONS))
def program(request) -> ProgramRun:
    return run_program(CONFIGURATIONS[request.param])


def helm_template(helm: str, release: dict[str, Any], tmp_path: Path) -> list[dict[str, Any]]:
    values_file = tmp_path / f"{release['name']}.values.json"
    values_file.write_text(json.dumps(plain(release["values"])))
    result = subprocess.run(
        [
            helm,
            "template",
            release["name"],
            str(REPO_ROOT / release["chart"]),
            "--namespace",
            release["namespace"],
            "--kube-version",
            KUBERNETES_VERSION,
            "--values",
            str(values_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def containers(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    found = []
    for obj in objects:
        if obj["kind"] == kind:
            spec = obj["spec"]["template"]["spec"]
            found += spec.get("initContainers", []) + spec["containers"]
    return found


def test_setup_chart_renders_with_the_program_values(program, helm_bin, tmp_path):
    setup = program.named("mlflow-setup").inputs
    objects = helm_template(helm_bin, setup, tmp_path)
    kinds = {obj["kind"] for obj in objects}
    assert {
        "Deployment",
        "StatefulSet",
        "Service",
        "Secret",
        "PersistentVolume",
        "PersistentVolumeClaim",
    } <= kinds
    tracking_image = program.named("images-tracking-server").outputs["repoDigest"]
    images = {c["image"] for c in containers(objects, "Deployment")}
    if plain(setup["values"])["exposure"]["type"] == "public":
        # The public endpoint's TLS terminator runs beside each server.
        assert images == {tracking_image, program.named("images-tls-proxy").outputs["repoDigest"]}
    else:
        assert images == {tracking_image}
    assert {obj["metadata"].get("namespace") for obj in objects if obj["kind"] == "Deployment"} == {
        setup["namespace"]
    }


def test_every_image_the_charts_run_is_one_the_program_pushed(program, helm_bin, tmp_path):
    """Both charts rendered with the program's values (the setup release, MySQL included, and every
    run): each container of each object (CronJobs, init containers, the helm test pod) runs an image
    the program built and pushed, from the stack's ACR by digest. None is pulled from Docker Hub or
    by a tag."""
    login_server = program.one("azure-native:containerregistry:Registry").outputs["loginServer"]
    pushed = {image.outputs["repoDigest"] for image in program.of_type("docker:index/image:Image")}
    releases = [r.inputs for r in program.of_type("kubernetes:helm.sh/v3:Release")]
    assert {release["chart"] for release in releases} == {"charts/mlflow_setup", "charts/mlflow_project"}
    used = {}
    for release in releases:
        for obj, container in every_container(helm_template(helm_bin, release, tmp_path)):
            image = container["image"]
            ImageRef.parse(image, login_server)  # raises unless <acr>/<repository>@sha256:<hex>
            assert image in pushed, f"{obj['kind']}/{obj['metadata']['name']}: {image} was not pushed"
            assert container.get("imagePullPolicy", "IfNotPresent") == "IfNotPresent"
            used.setdefault(obj["kind"], set()).add(image)
    assert used["StatefulSet"] == {program.named("images-mysql").outputs["repoDigest"]}
    assert program.named("images-tracking-server").outputs["repoDigest"] in used["CronJob"]


def test_every_run_chart_renders_its_job(program, helm_bin, tmp_path):
    releases = [
        r.inputs for r in program.of_type("kubernetes:helm.sh/v3:Release") if r.name.startswith("mlflow-run-")
    ]
    assert releases
    project_image = program.named("images-project").outputs["repoDigest"]
    for release in releases:
        objects = helm_template(helm_bin, release, tmp_path)
        jobs = [obj for obj in objects if obj["kind"] == "Job"]
        assert len(jobs) == 1
        assert jobs[0]["metadata"]["name"].startswith(release["name"])
        (container,) = containers(objects, "Job")
        assert container["image"] == project_image
        command = " ".join(container.get("command", []) + container.get("args", []))
        assert release["values"]["run"]["entryPoint"] in command
        assert release["values"]["run"]["experiment"] in command


def test_setup_chart_mounts_the_program_claim_and_owns_no_data_volume(program, helm_bin, tmp_path):
    """With the program's values, the release's manifest (all a rollback can delete) holds neither MySQL's
    volume nor a claim for it: the StatefulSet mounts the claim the program bound to the retained disk."""
    objects = helm_template(helm_bin, program.named("mlflow-setup").inputs, tmp_path)
    disk = program.one("azure-native:compute:Disk")
    claim = program.one("kubernetes:core/v1:PersistentVolumeClaim", "mlflow-mysql-volume-claim").inputs
    volume = program.one("kubernetes:core/v1:PersistentVolume", "mlflow-mysql-volume-volume").inputs
    assert volume["spec"]["csi"]["volumeHandle"] == disk.id
    (sts,) = [o for o in objects if o["kind"] == "StatefulSet"]
    assert "volumeClaimTemplates" not in sts["spec"]
    assert sts["metadata"]["namespace"] == claim["metadata"]["namespace"]
    claims = [v["persistentVolumeClaim"]["claimName"] for v in sts["spec"]["template"]["spec"]["volumes"]
              if "persistentVolumeClaim" in v]  # fmt: skip
    assert claims == [claim["metadata"]["name"]]
    volumes = [o["spec"] for o in objects if o["kind"] == "PersistentVolume"]
    assert [v for v in volumes if v.get("csi", {}).get("driver") == "disk.csi.azure.com"] == []
    assert claim["metadata"]["name"] not in {
        o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"
    }


def test_setup_chart_mounts_the_program_certificate_claim_and_owns_none(program, helm_bin, tmp_path):
    """With the program's values, the TLS terminator (public) keeps certificates on the claim the program
    bound to the certificate share, and the release's manifest holds no claim in the platform namespace:
    a rollback, an uninstall or a switch to private leaves the certificate where it is."""
    setup = program.named("mlflow-setup").inputs
    objects = helm_template(helm_bin, setup, tmp_path)
    claim = program.named("mlflow-certificate-volume-claim").inputs["metadata"]
    assert claim["namespace"] == setup["namespace"]
    (deployment,) = [
        o
        for o in objects
        if o["kind"] == "Deployment" and o["metadata"]["name"] == chart_values.TRACKING_SERVICE
    ]
    mounted = {
        v["persistentVolumeClaim"]["claimName"]
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if "persistentVolumeClaim" in v
    }
    public = plain(setup["values"])["exposure"]["type"] == "public"
    assert mounted == ({claim["name"]} if public else set())
    rendered = [o["metadata"] for o in objects if o["kind"] == "PersistentVolumeClaim"]
    assert [m["name"] for m in rendered if m["namespace"] == setup["namespace"]] == []
