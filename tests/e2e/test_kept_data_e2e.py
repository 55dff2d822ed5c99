"""Data kept from one stack, started with another stack's secrets: everything is there, and both the admin
and the run user log in with the *new* stack's passwords (no old secret is needed).

The local stack runs the chart's schema-migration step (migrate.py) before the server, as the cluster's
init container does: it sets the admin to the stack's admin password on a database that has not had it
(and the run user's at every start); the local MariaDB user is aligned at every start as the chart's
align.sql does for MySQL (tests/test_mysql_align.py runs that SQL on a real server).

What MLflow encrypts is the exception: the first stack stores a gateway secret (an LLM provider's API key)
and a webhook with a signing secret, takes a backup (the backup CronJob's tool), then deletes both, so the
second stack meets them only through a restore. The second stack, whose KEK passphrase and webhook key
are its own, restores that backup through its real restore path (both stacks keep backups in the same
Azurite data, as one storage account would: no copy is needed). It serves; its init step (kek.py) names
the gateway secret and leaves the row as it is; neither secret opens with its keys, both still open with
the first stack's (the rows are intact), and the API key is in no log of either stack.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import InvalidToken
from mlflow.exceptions import MlflowException

from local import LocalStack, StackConfig, free_ports
from local.stack import _SECRET_GENERATORS
from tests.e2e.conftest import environ
from tests.e2e.keys import (
    DEFAULT_PASSPHRASE_WARNING,
    create_webhook,
    open_gateway_secret,
    open_webhook_secret,
    store_gateway_secret,
    stored_rows,
)

API = "/api/2.0/mlflow/experiments/search?max_results=1"


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # Not pytest's tmp_path: MariaDB runs as user `mysql`, who cannot enter /tmp/pytest-of-root (0700).
    directory = Path(tempfile.mkdtemp(prefix="mlflow-aks-kept-"))
    os.chmod(directory, 0o755)  # noqa: S103 (secrets inside are 0600)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _stack(workdir: Path, helm_bin: str) -> LocalStack:
    server, mysql, azurite = free_ports(3)
    return LocalStack(
        StackConfig(
            workdir=workdir / "stack",
            server_port=server,
            mysql_port=mysql,
            azurite_port=azurite,
            storage_account="keptaccount",
            container="kept-artifacts",
            helm=helm_bin,
        )
    )


def _env(stack: LocalStack, user: str, password: str) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": stack.tracking_uri,
        "MLFLOW_TRACKING_USERNAME": user,
        "MLFLOW_TRACKING_PASSWORD": password,
    }


def _with_env(env: dict[str, str], action):
    with environ(env):
        return action()


def test_kept_data_serves_the_next_stack_with_its_own_secrets(workdir, helm_bin) -> None:
    import mlflow
    import numpy as np
    from mlflow.tracking import MlflowClient
    from sklearn.linear_model import LogisticRegression

    first = _stack(workdir, helm_bin)
    old_secrets = dict(first.secrets)
    with first:
        admin = first.admin_credentials()

        def log_team_history() -> tuple[str, str]:
            client = MlflowClient(first.tracking_uri)
            experiment_id = client.create_experiment("kept-history")
            run = client.create_run(experiment_id)
            client.log_param(run.info.run_id, "C", "0.5")
            for step in range(5):
                client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
            model = LogisticRegression().fit(np.array([[0.0], [1.0], [2.0], [3.0]]), np.array([0, 0, 1, 1]))
            mlflow.set_tracking_uri(first.tracking_uri)  # the fluent API's, whatever ran before
            with mlflow.start_run(run_id=run.info.run_id):
                # Explicit requirements: skip MLflow's requirement inference (a subprocess, seconds).
                mlflow.sklearn.log_model(
                    model, name="model", registered_model_name="kept-model", pip_requirements=["scikit-learn"]
                )
            return experiment_id, run.info.run_id

        experiment_id, run_id = _with_env(_env(first, *admin), log_team_history)
        with httpx.Client(base_url=first.tracking_uri, timeout=30, auth=admin) as http:
            created = http.post(
                "/api/2.0/mlflow/users/create", json={"username": "alice", "password": "Alice-own-pw-1"}
            )
            assert created.status_code == 200, created.text
            granted = http.post(
                "/api/3.0/mlflow/users/permissions/grant",
                json={"username": "alice", "resource_type": "experiment", "resource_id": experiment_id,
                      "permission": "MANAGE"},
            )  # fmt: skip
            assert granted.status_code == 200, granted.text
            # An event nothing here fires; a public address, as MLflow requires of a webhook by default.
            stored = {
                **store_gateway_secret(http),
                **create_webhook(http, "https://1.1.1.1/hook", ("MODEL_VERSION_ALIAS", "DELETED")),
            }
        first_server_env = first.server_spec().main.env
        rows = stored_rows(first_server_env, stored)
        backup = first.backup()
        with httpx.Client(base_url=first.tracking_uri, timeout=30, auth=admin) as http:
            deleted = http.request(
                "DELETE", "/api/3.0/mlflow/gateway/secrets/delete", json={"secret_id": stored["secret_id"]}
            )
            assert deleted.status_code == 200, deleted.text
            deleted = http.delete(f"/api/2.0/mlflow/webhooks/{stored['webhook_id']}")
            assert deleted.status_code == 200, deleted.text
        assert stored_rows(first_server_env, stored) == {"gateway": None, "webhook": None}

    # Another stack's secrets for the same data: every generated secret is new.
    secrets_file = first.workdir / "secrets.json"
    new_secrets = {name: make() for name, make in _SECRET_GENERATORS.items()}
    assert all(new_secrets[k] != old_secrets[k] for k in new_secrets)
    assert {"kek_passphrase", "webhook_key"} <= new_secrets.keys()
    secrets_file.write_text(json.dumps(new_secrets))

    second = _stack(workdir, helm_bin)  # same working directory (same data), new ports and secrets
    with second:
        admin = second.admin_credentials()
        runner = second.run_credentials()
        assert admin[1] == new_secrets["admin_password"] and runner[1] == new_secrets["run_password"]
        with httpx.Client(base_url=second.tracking_uri, timeout=30) as http:
            assert http.get(API, auth=admin).status_code == 200, "the admin logs in with the new password"
            assert http.get(API, auth=runner).status_code == 200, "the run user logs in with the new password"
            assert http.get(API, auth=(admin[0], old_secrets["admin_password"])).status_code == 401
            assert http.get(API, auth=(runner[0], old_secrets["run_password"])).status_code == 401
            # A person's own password is theirs, not the platform's: it still works, with its permission.
            assert http.get(API, auth=("alice", "Alice-own-pw-1")).status_code == 200
            permission = http.get(
                "/api/3.0/mlflow/users/permissions/get",
                params={"username": "alice", "resource_type": "experiment", "resource_id": experiment_id},
                auth=admin,
            )
            assert permission.status_code == 200, permission.text
            assert permission.json()["permission"] == "MANAGE"

        def read_history() -> None:
            client = MlflowClient(second.tracking_uri)
            run = client.get_run(run_id)
            assert run.info.experiment_id == experiment_id
            assert run.data.params == {"C": "0.5"}
            history = client.get_metric_history(run_id, "loss")
            assert [(m.step, m.value) for m in history] == [(s, 1.0 / (s + 1)) for s in range(5)]
            [version] = client.search_model_versions("name='kept-model'")
            assert version.run_id == run_id
            mlflow.set_tracking_uri(second.tracking_uri)
            model = mlflow.pyfunc.load_model("models:/kept-model/1")
            assert list(model.predict(np.array([[0.0], [3.0]]))) == [0, 1]

        _with_env(_env(second, *admin), read_history)
        # The run user writes too (its own experiment), as a run Job would.
        _with_env(
            _env(second, *runner),
            lambda: MlflowClient(second.tracking_uri).create_experiment("kept-runner-check"),
        )

        # The first stack's backup, restored into this one: it serves, with the rows back.
        server_log = second.workdir / "server" / "server.log"
        logged_before_restore = server_log.stat().st_size
        second.restore(backup["name"])
        with httpx.Client(base_url=second.tracking_uri, timeout=30, auth=admin) as http:
            assert http.get(API).status_code == 200
            listed = http.get("/api/3.0/mlflow/gateway/secrets/list")
            assert listed.status_code == 200 and stored["secret_name"] in listed.text, listed.text
        restart_log = server_log.read_bytes()[logged_before_restore:].decode(errors="replace")
        unreadable = [line for line in restart_log.splitlines() if "none of this stack's keys" in line]
        named = [line.rsplit(": ", 1)[-1] for line in unreadable]
        assert named == [stored["secret_name"]], "kek.py names the restored secret it cannot open"
        server_env = second.server_spec().main.env
        restored = stored_rows(server_env, stored)
        assert restored == rows, "the restore brings both rows back; kek.py changed none"
        # Closed to this stack's server, with the errors MLflow raises...
        with pytest.raises(MlflowException):
            open_gateway_secret(restored, server_env["MLFLOW_CRYPTO_KEK_PASSPHRASE"])
        with pytest.raises(InvalidToken):
            open_webhook_secret(restored, server_env["MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"])
        # ...and open with the first stack's keys: the rows are intact.
        assert open_gateway_secret(restored, old_secrets["kek_passphrase"]) == {"api_key": stored["api_key"]}
        assert open_webhook_secret(restored, old_secrets["webhook_key"]) == stored["webhook_secret"]

    logs = {path: path.read_text(errors="replace") for path in workdir.rglob("*.log")}
    assert server_log in logs
    assert not [path for path, text in logs.items() if stored["api_key"] in text]
    assert not [path for path, text in logs.items() if stored["webhook_secret"] in text]
    assert not [path for path, text in logs.items() if DEFAULT_PASSPHRASE_WARNING in text]
