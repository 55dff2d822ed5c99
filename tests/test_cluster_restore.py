"""scripts/cluster-restore against a stand-in `kubectl` that serves the chart's real backup CronJob.

The stand-in records every call (and what was piped to it) and answers `wait` for the check or the
restore Job, and `rollout status`, as the scenario says, so the tests check the order of the steps, that
the server is always scaled back, that the outcome and the next step are told, and that the Jobs are the
chart's backup CronJob with only the command changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components.chart_values import BACKUP_SERVICE_ACCOUNT, setup_values
from tests import chart_render as cr

SCRIPT = cr.REPO_ROOT / "scripts" / "cluster-restore"
# Run by this interpreter (the shebang is added when written): `env python3` may go through a version
# manager's shim, which costs more than the stand-in itself on each of a restore's many calls.
FAKE_KUBECTL = r"""import json, os, sys
args = sys.argv[1:]
stdin = sys.stdin.read() if "-f" in args else ""
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"args": args, "stdin": stdin}) + "\n")
rest = args[2:]  # after --namespace <ns>
if rest[:2] == ["get", "cronjob"]:
    named = os.path.join(os.environ["FAKE_CRONJOBS"], rest[2] + ".json")
    print(open(named if os.path.exists(named) else os.environ["FAKE_CRONJOB"]).read())
elif rest[:3] == ["get", "deployment", "mlflow-jobs"]:
    print("" if os.environ.get("FAKE_NO_JOBS") else "deployment.apps/mlflow-jobs")
elif rest[:2] == ["get", "deployment"]:
    print("2", end="")
elif rest[:1] == ["wait"] and rest[1].startswith("job/"):
    step = rest[1].split("-")[1]
    sys.exit(1 if step in os.environ.get("FAKE_FAIL", "").split(",") else 0)
elif rest[:1] == ["logs"]:
    print(f"log of {rest[1]}")
elif rest[:2] == ["rollout", "status"]:
    sys.exit(1 if "rollout" in os.environ.get("FAKE_FAIL", "").split(",") else 0)
"""


@pytest.fixture(scope="module")
def cronjobs(helm_bin, tmp_path_factory) -> dict[str, dict]:
    values = setup_values(cr.SETUP_CONTEXTS["private"])
    workdir = tmp_path_factory.mktemp("restore")
    objects = cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, workdir)
    return {o["metadata"]["name"]: o for o in cr.of_kind(objects, "CronJob")}


@pytest.fixture(scope="module")
def backup_cronjob(cronjobs) -> dict:
    return cronjobs["mlflow-backup"]


def run_restore(
    tmp_path: Path, cronjob: dict, *args: str, fail: str = "", others: list[dict] = ()
) -> tuple[int, list[dict], str]:
    """The script against the stand-in kubectl, which answers `get cronjob <name>` with one of `others` of
    that name, else with `cronjob`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(f"#!{sys.executable}\n{FAKE_KUBECTL}")
    kubectl.chmod(0o755)
    (tmp_path / "cronjob.json").write_text(json.dumps(cronjob))
    named = tmp_path / "cronjobs"
    named.mkdir()
    for other in others:
        (named / f"{other['metadata']['name']}.json").write_text(json.dumps(other))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_LOG": str(tmp_path / "calls"),
           "FAKE_CRONJOB": str(tmp_path / "cronjob.json"), "FAKE_CRONJOBS": str(named),
           "FAKE_FAIL": fail}  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, check=False
    )
    log = tmp_path / "calls"
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
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
        elif rest[:1] == ["scale"] and rest[1] != "deployment/mlflow-jobs":  # the runner: its own test
            steps.append(rest[2])
    return steps


def _runner_steps(calls: list[dict]) -> list[str]:
    """The job runner's scale calls, and the Jobs between them."""
    steps = []
    for call in calls:
        rest = call["args"][2:]
        if rest[:1] == ["scale"] and rest[1] == "deployment/mlflow-jobs":
            steps.append(rest[2])
        elif rest[:1] == ["create"]:
            steps.append("job")
    return steps


@pytest.mark.parametrize("fail", ["", "restore"])
def test_the_job_runner_stops_for_the_restore_and_comes_back(tmp_path, backup_cronjob, fail):
    """MLflow's server-side jobs write to the tracking database too: the runner is stopped (and its pod
    waited for) before the restore and started again after it, whatever happened."""
    code, calls, output = run_restore(tmp_path, backup_cronjob, "latest", fail=fail)
    assert code == (1 if fail else 0), output
    assert _runner_steps(calls) == ["job", "--replicas=0", "job", "--replicas=1"]
    rest = [call["args"][2:] for call in calls]
    wait = ["wait", "pods", "-l", "app.kubernetes.io/component=jobs", "--for=delete", "--timeout=5m"]
    creates = [i for i, r in enumerate(rest) if r[:1] == ["create"]]
    assert creates[0] < rest.index(wait) < creates[1]  # after the check, before the restore


def test_without_jobs_there_is_no_runner_to_stop(tmp_path, backup_cronjob, monkeypatch):
    monkeypatch.setenv("FAKE_NO_JOBS", "1")
    code, calls, output = run_restore(tmp_path, backup_cronjob, "latest")
    assert code == 0, output
    assert _runner_steps(calls) == ["job", "job"]


def test_a_restore_checks_first_stops_the_server_restores_and_starts_it_again(tmp_path, backup_cronjob):
    code, calls, output = run_restore(tmp_path, backup_cronjob, "latest")
    assert code == 0, output
    assert _steps(calls) == [
        "job:restore latest --dry-run", "--replicas=0", "job:restore latest", "--replicas=2"
    ]  # fmt: skip
    assert all(call["args"][:2] == ["--namespace", "mlflow"] for call in calls)
    # Serving or crash-looping, the pods are waited for until gone, and it ends by waiting until it serves.
    rest = [call["args"][2:] for call in calls]
    assert [
        "wait",
        "pods",
        "-l",
        "app.kubernetes.io/component=tracking",
        "--for=delete",
        "--timeout=5m",
    ] in rest
    assert rest[-1][:3] == ["rollout", "status", "deployment/mlflow-tracking"]
    assert "serves the restored data" in output
    # The Jobs are the backup CronJob's pod: same image, identity, environment; only the command differs.
    cron_pod = backup_cronjob["spec"]["jobTemplate"]["spec"]["template"]
    for call in calls:
        if call["args"][2:3] == ["create"]:
            job = json.loads(call["stdin"])
            pod = job["spec"]["template"]
            assert pod["metadata"]["labels"] == cron_pod["metadata"]["labels"]
            assert pod["spec"]["serviceAccountName"] == cron_pod["spec"]["serviceAccountName"]
            # The backup identity: it reads the backups and writes the safety backup; the server's cannot.
            assert pod["spec"]["serviceAccountName"] == BACKUP_SERVICE_ACCOUNT
            [container], [cron_container] = pod["spec"]["containers"], cron_pod["spec"]["containers"]
            assert {k: v for k, v in container.items() if k != "command"} == {
                k: v for k, v in cron_container.items() if k != "command"
            }
            assert container["command"][:2] == ["python", "/app/backup.py"]


def test_force_reaches_both_the_check_and_the_restore(tmp_path, backup_cronjob):
    code, calls, output = run_restore(tmp_path, backup_cronjob, "mlflow-x.sql.gz", "--force")
    assert code == 0, output
    assert [s for s in _steps(calls) if s.startswith("job:")] == [
        "job:restore mlflow-x.sql.gz --force --dry-run", "job:restore mlflow-x.sql.gz --force"
    ]  # fmt: skip


def test_a_backup_that_fails_its_checks_changes_nothing(tmp_path, backup_cronjob):
    code, calls, output = run_restore(tmp_path, backup_cronjob, "mlflow-x.sql.gz", fail="check")
    assert code == 1
    assert _steps(calls) == ["job:restore mlflow-x.sql.gz --dry-run"]
    assert "nothing was changed" in output


def test_the_server_is_scaled_back_even_when_the_restore_fails(tmp_path, backup_cronjob):
    code, calls, output = run_restore(tmp_path, backup_cronjob, "latest", fail="restore")
    assert code == 1
    assert _steps(calls) == [
        "job:restore latest --dry-run", "--replicas=0", "job:restore latest", "--replicas=2"
    ]  # fmt: skip
    assert "the restore failed and changed nothing" in output


@pytest.mark.parametrize("fail", ["rollout", "restore,rollout"])
def test_a_server_that_does_not_come_back_is_told_with_the_next_step(tmp_path, backup_cronjob, fail):
    code, calls, output = run_restore(tmp_path, backup_cronjob, "latest", fail=fail)
    assert code == 1
    assert _steps(calls)[-1] == "--replicas=2"
    assert "kubectl logs deployment/mlflow-tracking -c migrate" in output
    assert "scripts/cluster-restore --list" in output


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
    assert _steps(calls) == [
        "job:restore latest --dry-run", "--replicas=0", "job:restore latest", "--replicas=2"
    ]  # fmt: skip
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
            # Only the backup identity reaches the backups: not the gc Job's.
            assert (
                json.loads(call["stdin"])["spec"]["template"]["spec"]["serviceAccountName"] == "mlflow-backup"
            )


def test_a_cronjob_without_a_destination_needs_one_and_changes_nothing(tmp_path, gc_cronjob):
    code, calls, output = run_restore(tmp_path, gc_cronjob, "latest", "--cronjob", "mlflow-gc")
    assert code == 2 and "--destination" in output and "nothing was changed" in output
    assert _steps(calls) == []


def test_a_restore_to_a_time_checks_first_then_runs_the_charts_point_in_time_template(tmp_path, cronjobs):
    """--to: the check is backup.py's dry run of the same restore; the restore is a Job of the suspended
    template, its three steps as the chart made them, with the time (and --force) given to every step."""
    template = cronjobs["mlflow-point-in-time-restore"]
    assert template["spec"]["suspend"] is True
    code, calls, output = run_restore(
        tmp_path, cronjobs["mlflow-backup"], "--to", "2026-12-02T14:30:00Z", "--force", others=[template]
    )
    assert code == 0, output
    jobs = [json.loads(c["stdin"]) for c in calls if c["args"][2:3] == ["create"]]
    assert len(jobs) == 2
    [check] = jobs[0]["spec"]["template"]["spec"]["containers"]
    assert check["command"] == [
        "python", "/app/backup.py", "restore", "--to", "2026-12-02T14:30:00Z", "--force", "--dry-run"
    ]  # fmt: skip
    pod, expected = (
        jobs[1]["spec"]["template"]["spec"],
        template["spec"]["jobTemplate"]["spec"]["template"]["spec"],
    )
    steps = [*pod["initContainers"], *pod["containers"]]
    assert [(c["name"], c["image"], c["command"]) for c in steps] == [
        (c["name"], c["image"], c["command"]) for c in [*expected["initContainers"], *expected["containers"]]
    ]
    for container in steps:
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MLFLOW_AKS_RESTORE_TO"] == "2026-12-02T14:30:00Z", container["name"]
        assert env["MLFLOW_AKS_RESTORE_FORCE"] == "true", container["name"]
    assert pod["serviceAccountName"] == "mlflow-backup"
    assert _steps(calls) == [
        "job:restore --to 2026-12-02T14:30:00Z --force --dry-run", "--replicas=0", "job:swap /restore",
        "--replicas=2",
    ]  # fmt: skip
    assert "serves the restored data" in output


def test_a_time_and_a_name_together_are_refused(tmp_path, backup_cronjob):
    code, calls, output = run_restore(
        tmp_path, backup_cronjob, "mlflow-x.sql.gz", "--to", "2026-12-02T14:30:00Z"
    )
    assert code == 2 and "give no NAME" in output
    assert calls == []  # refused before anything was asked of the cluster


@pytest.mark.parametrize(
    ("option", "command"), [("--list", ["list"]), ("--list-binlogs", ["binlogs", "list"])]
)
def test_listing_runs_one_job_and_changes_nothing(tmp_path, backup_cronjob, option, command):
    code, calls, output = run_restore(tmp_path, backup_cronjob, option)
    assert code == 0, output
    assert _steps(calls) == ["job:" + " ".join(command)]
