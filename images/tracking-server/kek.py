"""The stack's key-encryption key over the AI Gateway's stored API keys: adopt and rotate.

MLflow encrypts each secret a user stores for the AI Gateway (an LLM provider's API key) with a key of
its own, and wraps that key with a key-encryption key (KEK) derived from MLFLOW_CRYPTO_KEK_PASSPHRASE
and MLFLOW_CRYPTO_KEK_VERSION (mlflow/utils/crypto.py). Without a passphrase, MLflow uses a public
default one, so anyone holding the database or a backup can decrypt every stored key. The platform
sets a passphrase that Pulumi generates per stack.

The init container (migrate.py) calls `rewrap()` under the migration lock, once the schema is current.
Every secret whose key is not wrapped with the stack's current KEK is re-wrapped with it when it opens
with either:
- the previous passphrase (MLFLOW_AKS_PREVIOUS_KEK_PASSPHRASE, one version below the current): a
  rotation (`kekVersion` raised);
- MLflow's public default passphrase at the secret's version: keys stored before the stack had a
  passphrase of its own.
Only the wrapped key and its version change, as in `mlflow crypto rotate-kek`; the encrypted value does
not. All of it is one transaction. A secret that opens with none of these (restored from another
stack's backup, or older than the previous rotation) is left as it is and named in the log (by name,
never by value): its owner stores it again.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import sqlalchemy

PASSPHRASE_ENV = "MLFLOW_CRYPTO_KEK_PASSPHRASE"  # noqa: S105 (a variable's name)
VERSION_ENV = "MLFLOW_CRYPTO_KEK_VERSION"
PREVIOUS_PASSPHRASE_ENV = "MLFLOW_AKS_PREVIOUS_KEK_PASSPHRASE"  # noqa: S105

log = logging.getLogger("kek")


@dataclass(frozen=True)
class Outcome:
    rewrapped: tuple[str, ...]
    """Secrets now wrapped with the current KEK (names)."""
    unreadable: tuple[str, ...]
    """Secrets that no known passphrase opens (names)."""


def _kek(passphrase: str, version: int) -> bytes:
    from mlflow.utils.crypto import KEKManager

    return KEKManager(passphrase=passphrase, kek_version=version).get_kek()


def _opens(wrapped: bytes, kek: bytes) -> bytes | None:
    from mlflow.utils.crypto import unwrap_dek

    try:
        return unwrap_dek(wrapped, kek)
    except Exception:  # wrong key: AES-GCM's tag does not verify (the error class is MLflow's business)
        return None


def rewrap(tracking_uri: str, environ: dict[str, str] | None = None) -> Outcome:
    """Re-wrap every secret not under the current KEK that a known passphrase opens; see the module doc."""
    from mlflow.utils.crypto import DEFAULT_KEK_PASSPHRASE, wrap_dek

    env = os.environ if environ is None else environ
    passphrase = env.get(PASSPHRASE_ENV, "")
    if not passphrase:
        raise SystemExit(f"kek: {PASSPHRASE_ENV} is not set: the stack's gateway keys would be wrapped with "
                         "MLflow's public default passphrase")  # fmt: skip
    version = int(env.get(VERSION_ENV) or "1")
    previous = env.get(PREVIOUS_PASSPHRASE_ENV, "")
    current = _kek(passphrase, version)
    keks: dict[tuple[str, int], bytes] = {}

    def kek(source: str, at: int) -> bytes:
        if (source, at) not in keks:
            keks[(source, at)] = _kek(previous if source == "previous" else DEFAULT_KEK_PASSPHRASE, at)
        return keks[(source, at)]

    engine = sqlalchemy.create_engine(tracking_uri, poolclass=sqlalchemy.pool.NullPool)
    rewrapped: list[str] = []
    unreadable: list[str] = []
    try:
        if not sqlalchemy.inspect(engine).has_table("secrets"):  # MLflow before the AI Gateway's secrets
            return Outcome((), ())
        with engine.begin() as connection:
            rows = connection.execute(
                sqlalchemy.text("SELECT secret_id, secret_name, wrapped_dek, kek_version FROM secrets")
            ).all()
            for secret_id, name, wrapped, at in rows:
                if at == version and _opens(wrapped, current) is not None:
                    continue
                candidates = [("default", at)]
                if previous and at == version - 1:
                    candidates.insert(0, ("previous", at))
                dek = next(
                    (key for key in (_opens(wrapped, kek(*c)) for c in candidates) if key is not None), None
                )
                if dek is None:
                    unreadable.append(name)
                    continue
                # Only these two columns: the trigger MLflow puts on `secrets` refuses changes to the ones
                # the ciphertext is bound to (secret_id, secret_name).
                connection.execute(
                    sqlalchemy.text(
                        "UPDATE secrets SET wrapped_dek = :wrapped, kek_version = :version "
                        "WHERE secret_id = :id"
                    ),
                    {"wrapped": wrap_dek(dek, current), "version": version, "id": secret_id},
                )
                rewrapped.append(name)
    finally:
        engine.dispose()
    if rewrapped:
        log.info("re-wrapped %d gateway secret(s) with this stack's key (version %d): %s",
                 len(rewrapped), version, ", ".join(sorted(rewrapped)))  # fmt: skip
    if unreadable:
        log.warning(
            "%d gateway secret(s) open with none of this stack's keys (restored from another stack, or "
            "older than the previous rotation); their owners must store them again: %s",
            len(unreadable), ", ".join(sorted(unreadable)),
        )  # fmt: skip
    return Outcome(tuple(rewrapped), tuple(unreadable))
