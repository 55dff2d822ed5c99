"""Azurite, the Azure Blob Storage emulator (npm, pinned in package.json/package-lock.json).

Started as `node …/azurite/dist/src/blob/main.js` directly - not through npx or the `azurite`
wrapper - so the stack records one clean PID. Its only account is the stack's own, with a generated
key (AZURITE_ACCOUNTS), so the well-known development key opens nothing here.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from local.procs import Proc, StackError, port_in_use, spawn, wait_until

INSTALL_HINT = "install Node.js and Azurite: apt-get install nodejs npm && npm ci (or run scripts/bootstrap)"


def main_js(repo_root: Path) -> Path:
    return repo_root / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"


def node_binary() -> str | None:
    return shutil.which("node")


def connection_string(account: str, key: str, port: int) -> str:
    """Path-style endpoint on 127.0.0.1: what the Azure SDK (and MLflow's Blob repository) needs."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{account};"
    )


def start(repo_root: Path, location: Path, port: int, account: str, key: str) -> Proc:
    location.mkdir(parents=True, exist_ok=True)
    os.chmod(location, 0o700)
    argv = [
        node_binary() or "node",
        str(main_js(repo_root)),
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(location / "data"),
        "--disableTelemetry",
        # Request logs would grow without bound under load (benchmarks); errors still reach the log.
        "--silent",
        # The pinned Azure SDK may speak a newer REST API version than this Azurite knows.
        "--skipApiVersionCheck",
    ]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(location),
        "AZURITE_ACCOUNTS": f"{account}:{key}",
    }
    return spawn("azurite", argv, env=env, log=location / "azurite.log")


def wait_ready(proc: Proc, port: int, timeout: float = 60) -> None:
    wait_until("Azurite to listen", lambda: port_in_use(port), timeout=timeout, proc=proc)


def ensure_container(conn_str: str, container: str) -> None:
    """Create the artifacts container (idempotent)."""
    from azure.core.exceptions import ResourceExistsError
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient.from_connection_string(conn_str)
    try:
        client.create_container(container)
    except ResourceExistsError:
        pass
    except Exception as err:  # a clear message rather than an SDK traceback
        raise StackError(f"cannot create the blob container {container!r} in Azurite: {err}") from err
