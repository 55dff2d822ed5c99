"""Artifacts through the tracking server's proxy on the real stack: large files, many files, interruptions.

As a run Job logs them: the non-admin run user, MLflow's own client, the chart's server (serve.py with
stream_artifacts.py) and Azurite behind it. MLflow's client tries a multipart upload from 500 MiB; the
server refuses it, and the client streams the file through the server in one PUT, which the server
stages into the blob store block by block (nothing goes through its scratch volume). The 1 GiB, 5 GiB
and 2,000-file sizes and the throughput against Azurite directly are measured by
`python -m benchmarks.artifacts` (benchmarks/README.md), not here.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from azure.storage.blob import BlobServiceClient

MIB = 1024 * 1024
LARGE_MIB = 600  # above MLflow's 500 MiB multipart threshold: the client first asks for multipart
FILES = 300


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MIB):
            digest.update(block)
    return digest.hexdigest()


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _tree_mib(directory: Path) -> float:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file()) / MIB


class Watch:
    """Peak RSS of the server's process tree and peak size of its scratch volume, sampled every 100 ms."""

    def __init__(self, stack):
        self.stack = stack
        self.scratch = Path(stack.server_spec().main.env["TMPDIR"])
        self.idle_rss = _rss_mib(stack.server_pids())
        self.peak_rss, self.peak_scratch = self.idle_rss, _tree_mib(self.scratch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, _rss_mib(self.stack.server_pids()))
            self.peak_scratch = max(self.peak_scratch, _tree_mib(self.scratch))
            time.sleep(0.1)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def run_user_env(stack) -> Iterator[dict[str, str]]:
    user, password = stack.run_credentials()
    env = {
        "MLFLOW_TRACKING_URI": stack.tracking_uri,
        "MLFLOW_TRACKING_USERNAME": user,
        "MLFLOW_TRACKING_PASSWORD": password,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)


@pytest.fixture(scope="module")
def run_id(stack, run_user_env) -> str:
    """A run of the run user's own experiment (it may write only what it created)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(stack.tracking_uri)
    experiment_id = client.create_experiment(f"artifacts-{uuid.uuid4().hex[:8]}")
    return client.create_run(experiment_id).info.run_id


def test_a_large_file_uploads_and_downloads_byte_identical_in_bounded_memory(stack, run_id, tmp_path):
    from mlflow.tracking import MlflowClient

    source = tmp_path / "model.bin"
    with open(source, "wb") as f:
        for _ in range(LARGE_MIB):
            f.write(os.urandom(MIB))
    client = MlflowClient(stack.tracking_uri)
    with Watch(stack) as watch:
        client.log_artifact(run_id, str(source), "checkpoints")
        downloaded = Path(client.download_artifacts(run_id, "checkpoints/model.bin", str(tmp_path / "down")))
    assert _sha256(downloaded) == _sha256(source)
    assert [(f.path, f.file_size) for f in client.list_artifacts(run_id, "checkpoints")] == [
        ("checkpoints/model.bin", LARGE_MIB * MIB)
    ]
    # Bounded: at most 150 MiB over idle, and nothing staged in the scratch volume (/tmp in the pod).
    assert watch.peak_rss - watch.idle_rss <= 150, (watch.idle_rss, watch.peak_rss)
    assert watch.peak_scratch < 1, f"{watch.peak_scratch:.0f} MiB in the scratch volume"


def test_a_directory_of_many_small_files_round_trips(stack, run_id, tmp_path):
    from mlflow.tracking import MlflowClient

    source = tmp_path / "shards"
    for index in range(FILES):
        sub = source / f"part-{index % 10}"
        sub.mkdir(parents=True, exist_ok=True)
        (sub / f"shard-{index:05d}.bin").write_bytes(os.urandom(512 + index))
    client = MlflowClient(stack.tracking_uri)
    client.log_artifacts(run_id, str(source), "shards")
    downloaded = Path(client.download_artifacts(run_id, "shards", str(tmp_path / "down")))
    before = {p.relative_to(source): p.read_bytes() for p in source.rglob("*") if p.is_file()}
    after = {p.relative_to(downloaded): p.read_bytes() for p in downloaded.rglob("*") if p.is_file()}
    assert len(after) == FILES and after == before


def _interrupted_put(stack, path: str, total: int, sent: int) -> None:
    """Start a PUT of `total` bytes through the proxy, send `sent` of them, and hang up."""
    user, password = stack.run_credentials()
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    with socket.create_connection(("127.0.0.1", stack.config.server_port)) as sock:
        sock.sendall(
            f"PUT /api/2.0/mlflow-artifacts/artifacts/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Basic {token}\r\nContent-Length: {total}\r\n\r\n".encode()
        )
        chunk = os.urandom(MIB)
        for _ in range(sent // MIB):
            sock.sendall(chunk)
        time.sleep(1)  # the server has staged blocks by now


def test_an_interrupted_upload_leaves_no_half_written_artifact(stack, run_id, tmp_path):
    """Blocks are committed only once the whole body has arrived: a broken upload of a new file shows
    nothing, and a broken upload over an existing file leaves the old version whole."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(stack.tracking_uri)
    artifact_root = client.get_run(run_id).info.artifact_uri.removeprefix("mlflow-artifacts:/")
    old = tmp_path / "weights.bin"
    old.write_bytes(os.urandom(3 * MIB))
    client.log_artifact(run_id, str(old), "interrupted")

    _interrupted_put(stack, f"{artifact_root}/interrupted/new.bin", total=64 * MIB, sent=24 * MIB)
    _interrupted_put(stack, f"{artifact_root}/interrupted/weights.bin", total=64 * MIB, sent=24 * MIB)

    listed = {(f.path, f.file_size) for f in client.list_artifacts(run_id, "interrupted")}
    assert listed == {("interrupted/weights.bin", 3 * MIB)}
    again = Path(client.download_artifacts(run_id, "interrupted/weights.bin", str(tmp_path / "down")))
    assert again.read_bytes() == old.read_bytes()
    # In the blob store too: no committed blob for the broken upload.
    blobs = BlobServiceClient.from_connection_string(stack.azure_connection_string).get_container_client(
        stack.config.container
    )
    names = [b.name for b in blobs.list_blobs(name_starts_with=f"{stack.config.artifacts_path}/")]
    assert any(n.endswith("/interrupted/weights.bin") for n in names)
    assert not any(n.endswith("/interrupted/new.bin") for n in names)


def test_the_server_refuses_multipart_uploads(stack, run_id):
    """No presigned URL ever leaves the server: clients never write to the storage account themselves
    (and the server's identity needs no user delegation key). MLflow's client then streams one PUT."""
    from mlflow.exceptions import _UnsupportedMultipartUploadException
    from mlflow.tracking import MlflowClient

    artifact_root = MlflowClient(stack.tracking_uri).get_run(run_id).info.artifact_uri
    path = artifact_root.removeprefix("mlflow-artifacts:/")
    answer = httpx.post(
        f"{stack.tracking_uri}/api/2.0/mlflow-artifacts/mpu/create/{path}",
        json={"path": "big.bin", "num_parts": 3},
        auth=stack.run_credentials(),
        timeout=30,
    )
    assert answer.status_code == 501, answer.text
    assert answer.json()["message"].startswith(_UnsupportedMultipartUploadException.MESSAGE)
    assert "sig=" not in answer.text and "blob.core" not in answer.text
