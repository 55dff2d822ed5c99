"""kek.py re-wraps the AI Gateway's stored keys with the stack's key-encryption key: keys stored under
MLflow's public default passphrase (before the stack had one) and under the previous version's passphrase
(a rotation) end up readable with the current one only; another stack's keys are left alone and named.

MLflow's own crypto (mlflow.utils.crypto) encrypts and decrypts; the table has the columns of MLflow's
`secrets` table. The real table on MariaDB: tests/e2e/test_kept_data_e2e.py (kek.py in a stack's init
step, on a secret restored from another stack's backup).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy
from mlflow.utils.crypto import DEFAULT_KEK_PASSPHRASE, KEKManager, _decrypt_secret, _encrypt_secret

REPO_ROOT = Path(__file__).resolve().parent.parent
CURRENT = "current passphrase of this stack, long enough 0123456789"
PREVIOUS = "previous passphrase of this stack, long enough 0123456789"
OTHER = "another stack's passphrase, long enough 0123456789abcdef"


@pytest.fixture(scope="module")
def kek():
    spec = importlib.util.spec_from_file_location("kek", REPO_ROOT / "images/tracking-server/kek.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["kek"] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def database(tmp_path) -> str:
    uri = f"sqlite:///{tmp_path / 'tracking.db'}"
    engine = sqlalchemy.create_engine(uri)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text(
                "CREATE TABLE secrets (secret_id VARCHAR(36) PRIMARY KEY, secret_name VARCHAR(255) UNIQUE, "
                "encrypted_value BLOB NOT NULL, wrapped_dek BLOB NOT NULL, kek_version INTEGER NOT NULL)"
            )
        )
    engine.dispose()
    return uri


def _store(uri: str, name: str, value: str, passphrase: str, version: int) -> str:
    secret_id = str(uuid.uuid4())
    encrypted = _encrypt_secret(value, KEKManager(passphrase, version), secret_id, name)
    engine = sqlalchemy.create_engine(uri)
    with engine.begin() as connection:
        connection.execute(
            sqlalchemy.text("INSERT INTO secrets VALUES (:id, :name, :value, :dek, :version)"),
            {"id": secret_id, "name": name, "value": encrypted.encrypted_value,
             "dek": encrypted.wrapped_dek, "version": encrypted.kek_version},
        )  # fmt: skip
    engine.dispose()
    return secret_id


def _read(uri: str, name: str, passphrase: str, version: int) -> str:
    engine = sqlalchemy.create_engine(uri)
    with engine.connect() as connection:
        secret_id, value, dek, stored_version = connection.execute(
            sqlalchemy.text(
                "SELECT secret_id, encrypted_value, wrapped_dek, kek_version FROM secrets "
                "WHERE secret_name = :n"
            ),
            {"n": name},
        ).one()
    engine.dispose()
    assert stored_version == version
    return _decrypt_secret(value, dek, KEKManager(passphrase, version), secret_id, name)


def _env(version: int = 1, previous: str = "") -> dict[str, str]:
    env = {"MLFLOW_CRYPTO_KEK_PASSPHRASE": CURRENT, "MLFLOW_CRYPTO_KEK_VERSION": str(version)}
    if previous:
        env["MLFLOW_AKS_PREVIOUS_KEK_PASSPHRASE"] = previous
    return env


def test_keys_under_mlflows_default_passphrase_are_adopted(kek, database):
    _store(database, "openai", "sk-default-1", DEFAULT_KEK_PASSPHRASE, 1)
    _store(database, "azure", "az-key-2", CURRENT, 1)  # stored since: already the stack's

    outcome = kek.rewrap(database, _env())

    assert outcome == kek.Outcome(rewrapped=("openai",), unreadable=())
    assert _read(database, "openai", CURRENT, 1) == "sk-default-1"
    assert _read(database, "azure", CURRENT, 1) == "az-key-2"
    with pytest.raises(Exception, match="decrypt"):  # the public passphrase opens nothing any more
        _read(database, "openai", DEFAULT_KEK_PASSPHRASE, 1)
    # Idempotent: a second start finds nothing to do.
    assert kek.rewrap(database, _env()) == kek.Outcome((), ())


def test_a_rotation_rewraps_every_key_from_the_previous_passphrase(kek, database):
    _store(database, "openai", "sk-1", PREVIOUS, 1)
    _store(database, "anthropic", "ak-2", PREVIOUS, 1)

    outcome = kek.rewrap(database, _env(version=2, previous=PREVIOUS))

    assert sorted(outcome.rewrapped) == ["anthropic", "openai"] and outcome.unreadable == ()
    assert _read(database, "openai", CURRENT, 2) == "sk-1"
    assert _read(database, "anthropic", CURRENT, 2) == "ak-2"


def test_another_stacks_keys_are_left_alone_and_named_never_shown(kek, database, caplog):
    _store(database, "foreign", "sk-foreign-secret-value", OTHER, 1)
    _store(database, "ours", "sk-ours", DEFAULT_KEK_PASSPHRASE, 1)

    with caplog.at_level(logging.INFO, logger="kek"):
        outcome = kek.rewrap(database, _env())

    assert outcome == kek.Outcome(rewrapped=("ours",), unreadable=("foreign",))
    assert _read(database, "foreign", OTHER, 1) == "sk-foreign-secret-value"  # untouched
    assert "foreign" in caplog.text and "store them again" in caplog.text
    assert "sk-" not in caplog.text and CURRENT not in caplog.text


def test_without_a_passphrase_it_refuses_instead_of_using_the_default(kek, database):
    with pytest.raises(SystemExit, match="MLFLOW_CRYPTO_KEK_PASSPHRASE"):
        kek.rewrap(database, {})


def test_a_database_without_the_secrets_table_is_left_alone(kek, tmp_path):
    assert kek.rewrap(f"sqlite:///{tmp_path / 'old.db'}", _env()) == kek.Outcome((), ())
