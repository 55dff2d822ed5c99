"""What the e2e tests of stored keys share: storing a gateway secret (an LLM provider's API key) and a webhook
with a signing secret through a stack's API; reading both back in a process with a server's environment
(the chart's, or with other keys); their rows as stored, and opening those with given keys.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import uuid

import httpx
import sqlalchemy

DEFAULT_PASSPHRASE_WARNING = "MLFLOW_CRYPTO_KEK_PASSPHRASE not set"

# Run in a process with a server's environment: decrypt the gateway secret, read the webhook's secret.
READER = """
import json, os, sys
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as Registry
uri = os.environ["MLFLOW_BACKEND_STORE_URI"]
out = {}
try:
    out["gateway"] = SqlAlchemyStore(uri, "/tmp")._get_decrypted_secret(sys.argv[1])
except Exception as e:
    out["gateway_error"] = type(e).__name__
try:
    out["webhook"] = Registry(uri).get_webhook(sys.argv[2]).secret
except Exception as e:
    out["webhook_error"] = type(e).__name__ + ": " + repr(e.__cause__ or e.__context__)
print(json.dumps(out))
"""


def store_gateway_secret(http: httpx.Client) -> dict[str, str]:
    """An OpenAI API key stored in the AI Gateway through `http` (a stack's API, as an admin)."""
    api_key = f"sk-test-{secrets.token_hex(16)}"
    created = http.post(
        "/api/3.0/mlflow/gateway/secrets/create",
        json={"secret_name": f"openai-{uuid.uuid4().hex[:6]}", "secret_value": {"api_key": api_key},
              "provider": "openai"},
    )  # fmt: skip
    assert created.status_code == 200, created.text
    assert api_key not in created.text  # the API only ever shows it masked
    secret = created.json()["secret"]
    return {"secret_id": secret["secret_id"], "secret_name": secret["secret_name"], "api_key": api_key}


def create_webhook(
    http: httpx.Client, url: str, event: tuple[str, str] = ("REGISTERED_MODEL", "CREATED")
) -> dict[str, str]:
    """A webhook to `url` on `event` (entity, action) with a signing secret, through `http`."""
    webhook_secret = f"whsec-{secrets.token_hex(16)}"
    hook = http.post(
        "/api/2.0/mlflow/webhooks",
        json={"name": f"hook-{uuid.uuid4().hex[:6]}", "url": url,
              "events": [{"entity": event[0], "action": event[1]}], "secret": webhook_secret},
    )  # fmt: skip
    assert hook.status_code == 200, hook.text
    return {"webhook_id": hook.json()["webhook"]["webhook_id"], "webhook_secret": webhook_secret}


def other_stacks_keys() -> dict[str, str]:
    """A KEK passphrase and a webhook key as another stack has them (generated as the local stack does)."""
    return {
        "MLFLOW_CRYPTO_KEK_PASSPHRASE": secrets.token_urlsafe(48),
        "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    }


def read_stored(stack, stored: dict[str, str], **env: str) -> dict:
    """READER's answer, run with the stack server's environment, `env` over it."""
    spec = stack.server_spec().main
    done = subprocess.run(
        [sys.executable, "-c", READER, stored["secret_id"], stored["webhook_id"]],
        env={**os.environ, **spec.env, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def stored_rows(server_env: dict[str, str], stored: dict[str, str]) -> dict[str, tuple | None]:
    """The rows as the database of a server with `server_env` holds them: the gateway secret's, and the
    webhook's unless deleted (MLflow only marks a webhook deleted)."""
    uri = server_env["MLFLOW_BACKEND_STORE_URI"]
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            gateway = connection.execute(
                sqlalchemy.text("SELECT secret_id, secret_name, wrapped_dek, kek_version, encrypted_value "
                                "FROM secrets WHERE secret_id = :id"),
                {"id": stored["secret_id"]},
            ).one_or_none()  # fmt: skip
            webhook = connection.execute(
                sqlalchemy.text("SELECT secret FROM webhooks "
                                "WHERE webhook_id = :id AND deleted_timestamp IS NULL"),
                {"id": stored["webhook_id"]},
            ).one_or_none()  # fmt: skip
    finally:
        engine.dispose()
    return {"gateway": gateway and tuple(gateway), "webhook": webhook and tuple(webhook)}


# Decrypted as MLflow's server decrypts them: SqlAlchemyStore._get_decrypted_secret (a KEKManager from the
# passphrase, at the row's version), and the webhooks table's EncryptedString (Fernet).
def open_gateway_secret(rows: dict[str, tuple], passphrase: str) -> dict:
    from mlflow.utils.crypto import KEKManager, _decrypt_secret

    secret_id, secret_name, wrapped_dek, kek_version, encrypted_value = rows["gateway"]
    kek = KEKManager(passphrase=passphrase, kek_version=kek_version)
    return _decrypt_secret(encrypted_value, wrapped_dek, kek, secret_id, secret_name)


def open_webhook_secret(rows: dict[str, tuple], webhook_key: str) -> str:
    from cryptography.fernet import Fernet

    return Fernet(webhook_key).decrypt(rows["webhook"][0].encode()).decode()
