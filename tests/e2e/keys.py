"""What the e2e tests of stored keys share: storing a gateway secret (an LLM provider's API key) and a webhook
with a signing secret through a stack's API; their rows as the database holds them, and opening those with
given keys as MLflow's server does.
"""

from __future__ import annotations

import secrets
import uuid

import httpx
import sqlalchemy

DEFAULT_PASSPHRASE_WARNING = "MLFLOW_CRYPTO_KEK_PASSPHRASE not set"


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
