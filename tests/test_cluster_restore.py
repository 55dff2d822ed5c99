"""scripts/cluster-restore against a stand-in `kubectl` that serves the chart's real backup CronJob.

The stand-in records every call (and what was piped to it) and answers `wait` for the verify or the
restore Job as the scenario says, so the tests check the order of the steps, that the server is always
scaled back, and that the Jobs are the chart's backup CronJob with only the command changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.chart_values import setup_values
from tests import chart_render as cr

SCRIPT = cr.REPO_ROOT / "scripts" / "cluster-restore"
FAKE_KUBECTL = r"""#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
stdin = sys.stdin.read() if "-f" in args else ""
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"args": args, "stdin": stdin}) + "\n")
rest = args[2:]  # after --namespace <ns>
if rest[:2] == ["get", "cronjob"]:
    print(open(os.environ["FAKE_CRONJOB"]).read())
elif rest[:2] == ["get", "deployment"]:
    print("2", end="")
elif rest[:1] == ["wait"] and rest[1].startswith("job/"):
    step = rest[1].split("-")[1]
    sys.exit(1 if step in os.environ.get("FAKE_FAIL", "").split(",") else 0)
elif rest[:1] == ["logs"]:
    print(f"log of {rest[1]}")
"""


@pytest.fixture(scope="module")
def backup_cronjob(helm_bin, tmp_path_factory) -> dict:
    values = setup_values(cr.SETUP_CONTEXTS["private"])
    workdir = tmp_path_factory.mktemp("restore")
    objects = cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, workdir)
    [cronjob] = [o for o in cr.of_kind(objects, "CronJob") if o["metadata"]["name"] == "mlflow-backup"]
    return cronjob


def run_restore(tmp_path: Path, cronjob: dict, *args: str, fail: str = "") -> tuple[int, list[dict], str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL)
    kubectl.chmod(0o755)
    (tmp_path / "cronjob.json").write_text(json.dumps(cronjob))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(tmp_path / "calls"),
           "FAKE_CRONJOB": str(tmp_path / "cronjob.json"), "FAKE_FAIL": fail}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, check=False
    )
    calls = [json.loads(line) for line in (tmp_path / "calls").read_text().splitlines()]
    return done.returncode, calls, done.stdout + done.stderr


def _steps(calls: list[dict]) -> list[str]:
    steps = []
    for call in calls:
        rest = call["args"][2:]
        if rest[:1] == ["create"]:
            steps.append(
                "job:"
                + " ".join(
                    json.loads(call["stdin"])["spec"]["template"]["spec"]["containers"][0]["command"][2:]
                )
            )
        elif rest[:1] == ["scale"]:
            steps.append(rest[2])
    return steps


def test_a_restore_checks_first_stops_the_server_restores_and_starts_it_again(tmp_path, backup_cronjob):
    code, calls, output = run_restore(tmp_path, backup_cronjob, "latest")
    assert code == 0, output
    assert _steps(calls) == ["job:verify latest", "--replicas=0", "job:restore latest", "--replicas=2"]
    assert all(call["args"][:2] == ["--namespace", "mlflow"] for call in calls)
    # The Jobs are the backup CronJob's pod: same image, identity, environment; only the command differs.
    cron_pod = backup_cronjob["spec"]["jobTemplate"]["spec"]["template"]
    for call in calls:
        if call["args"][2:3] == ["create"]:
            job = json.loads(call["stdin"])
            pod = job["spec"]["template"]
            assert pod["metadata"]["labels"] == cron_pod["metadata"]["labels"]
            assert pod["spec"]["serviceAccountName"] == cron_pod["spec"]["serviceAccountName"]
            [container], [cron_container] = pod["spec"]["containers"], cron_pod["spec"]["containers"]
            assert {k: v for k, v in container.items() if k != "command"} == {
                k: v for k, v in cron_container.items() if k != "command"
            }
            assert container["command"][:2] == ["python", "/app/backup.py"]


def test_a_backup_that_fails_its_checks_changes_nothing(tmp_path, backup_cronjob):
    code, calls, output = run_restore(tmp_path, backup_cronjob, "mlflow-x.sql.gz", fail="verify")
    assert code == 1
    assert _steps(calls) == ["job:verify mlflow-x.sql.gz"]
    assert "nothing was changed" in output


def test_the_server_is_scaled_back_even_when_the_restore_fails(tmp_path, backup_cronjob):
    code, calls, output = run_restore(tmp_path, backup_cronjob, "latest", fail="restore")
    assert code == 1
    assert _steps(calls) == ["job:verify latest", "--replicas=0", "job:restore latest", "--replicas=2"]
    assert "safety backup" in output


BACKUPS = "wasbs://mlflow-backups@mlflowst7f3k.blob.core.windows.net/databases"


@pytest.fixture(scope="module")
def gc_cronjob(helm_bin, tmp_path_factory) -> dict:
    """`database: flexibleServer`: the chart has no backup CronJob; its gc CronJob reaches the server."""
    values = setup_values(cr.SETUP_CONTEXTS["private-flexible-server"])
    objects = cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, tmp_path_factory.mktemp("gc"))
    assert [o["metadata"]["name"] for o in cr.of_kind(objects, "CronJob")] == ["mlflow-gc"]
    return cr.one(objects, "CronJob", "mlflow-gc")


def test_without_a_backup_cronjob_the_gc_cronjob_runs_the_restore_with_the_destination(tmp_path, gc_cronjob):
    code, calls, output = run_restore(
        tmp_path, gc_cronjob, "latest", "--cronjob", "mlflow-gc", "--destination", BACKUPS
    )
    assert code == 0, output
    assert calls[0]["args"][2:5] == ["get", "cronjob", "mlflow-gc"]
    assert _steps(calls) == ["job:verify latest", "--replicas=0", "job:restore latest", "--replicas=2"]
    cron_container = gc_cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    for call in calls:
        if call["args"][2:3] == ["create"]:
            [container] = json.loads(call["stdin"])["spec"]["template"]["spec"]["containers"]
            env = {e["name"]: e for e in container["env"]}
            assert env["MLFLOW_AKS_BACKUP_DESTINATION"] == {
                "name": "MLFLOW_AKS_BACKUP_DESTINATION",
                "value": BACKUPS,
            }
            # Everything else is the gc Job's: the database URIs from the tracking Secret, the identity.
            assert [
                e for e in container["env"] if e["name"] != "MLFLOW_AKS_BACKUP_DESTINATION"
            ] == cron_container["env"]
            assert container["image"] == cron_container["image"]


def test_a_cronjob_without_a_destination_needs_one_and_changes_nothing(tmp_path, gc_cronjob):
    code, calls, output = run_restore(tmp_path, gc_cronjob, "latest", "--cronjob", "mlflow-gc")
    assert code == 2 and "--destination" in output and "nothing was changed" in output
    assert _steps(calls) == []
