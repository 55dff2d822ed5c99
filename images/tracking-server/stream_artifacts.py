"""Artifacts of any size through the tracking server's proxy, streamed to and from Azure Blob Storage.

What MLflow 3.17.2 does with a large artifact on Azure, and why it fails or does not hold:

- **Upload, multipart (the default from 500 MiB).** The server hands the client one SAS URL per 10 MiB
  part, numbering the blocks `mlflow_block_1` ... `mlflow_block_103`
  (mlflow/store/artifact/azure_blob_artifact_repo.py, `create_multipart_upload`). Azure requires every
  block id of a blob to have the same length, so Put Block answers 400 `InvalidBlobOrBlock` from part 10
  on (Azurite enforces the same rule, Azure/Azurite#401). The client reports "Failed to upload at least one
  part" and nothing is stored. Beyond that bug, this path signs user-delegation SAS URLs with the
  server's workload identity, which needs `generateUserDelegationKey` on the whole storage account, and
  it makes run Jobs and laptops write to the storage account directly.
- **Upload, single PUT.** The Azure repository cannot take a stream (`StreamUploadMixin`), so the server
  spools the whole body into its scratch volume before it uploads (mlflow/server/artifact_router.py).
  A 5 GiB file needs 5 GiB of /tmp. The client hears nothing while the server copies the spool, and its
  read timeout fires: it retries, and the spools pile up until the pod is evicted.
- **Download.** The server downloads the whole blob into /tmp before it sends the first byte.

What this module changes, in the server process only (`install()`, from serve.py):

1. The artifact repository becomes a `StreamUploadMixin`. MLflow's own upload route
   (`artifact_router.upload_artifact`, behind MLflow's authentication) then hands it the request body as
   it arrives. The body is staged as Azure blocks of BLOCK_SIZE with ids of one length, at most
   STAGE_CONCURRENCY blocks in flight. The blob is committed (Put Block List) only once the whole body
   has arrived. An interrupted upload commits nothing, so no half-written artifact ever becomes visible,
   and an earlier version of the same file stays as it was. Azure drops uncommitted blocks after 7 days.
2. Multipart upload is refused (`_UnsupportedMultipartUploadException`). MLflow's client then falls back
   to the single streamed PUT, so no client needs network access to the storage account, and the
   server's identity needs no delegation key.
3. Downloads stream: a route placed ahead of MLflow's own, on the same path and behind the same
   authentication middleware, reads the blob in DOWNLOAD_CHUNK ranges pinned to its ETag (a blob
   overwritten meanwhile fails the download instead of mixing two versions) and sends each range as it
   arrives.

Memory stays bounded by about (STAGE_CONCURRENCY + 1) x BLOCK_SIZE per upload and 2 x DOWNLOAD_CHUNK per
download. Nothing touches the scratch volume. The Azure calls (Put Block, Put Block List, Get Blob
Properties, Get Blob with a range) need only the data actions `blobs/read` and `blobs/write` on the
container, which the server's workload identity holds: no account key, no SAS.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import threading
import uuid
from collections.abc import AsyncIterable, Iterator
from typing import Any, BinaryIO

MIB = 1024 * 1024
BLOCK_SIZE = int(os.environ.get("MLFLOW_AKS_UPLOAD_BLOCK_MIB", "8")) * MIB
STAGE_CONCURRENCY = int(os.environ.get("MLFLOW_AKS_UPLOAD_CONCURRENCY", "4"))
DOWNLOAD_CHUNK = int(os.environ.get("MLFLOW_AKS_DOWNLOAD_CHUNK_MIB", "4")) * MIB
ARTIFACT_ROUTES = (
    "/api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}",
    "/ajax-api/2.0/mlflow-artifacts/artifacts/{artifact_path:path}",
)


def block_ids(upload: str) -> Iterator[str]:
    """Block ids for one upload: all the same length (Azure's rule), unique to the upload (a retry
    racing the original never commits the other's blocks)."""
    index = 0
    while True:
        yield f"{upload}-{index:08d}"  # 16 + 1 + 8 characters; 10^8 blocks is far past Azure's 50,000
        index += 1


def streaming_repository_class():
    """The Azure Blob repository with streamed uploads and downloads, and no multipart upload."""
    from mlflow.exceptions import MlflowException, _UnsupportedMultipartUploadException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
    from mlflow.store.artifact.artifact_repo import StreamUploadMixin
    from mlflow.store.artifact.azure_blob_artifact_repo import AzureBlobArtifactRepository

    class StreamingAzureBlobArtifactRepository(AzureBlobArtifactRepository, StreamUploadMixin):
        def _blob(self, artifact_path: str | None, file_name: str | None = None):
            container, _, root, _ = self.parse_wasbs_uri(self.artifact_uri)
            parts = [p for p in (root, artifact_path, file_name and posixpath.basename(file_name)) if p]
            return self.client.get_blob_client(container, posixpath.join(*parts))

        async def log_artifact_from_async_stream(
            self, chunks: AsyncIterable[bytes], artifact_file_name: str, artifact_path: str | None = None
        ) -> None:
            blob = self._blob(artifact_path, artifact_file_name)
            ids = block_ids(uuid.uuid4().hex[:16])
            staged: list[str] = []
            slots = asyncio.Semaphore(STAGE_CONCURRENCY)
            tasks: list[asyncio.Task] = []

            async def stage(block_id: str, data: bytes) -> None:
                try:
                    await asyncio.to_thread(
                        blob.stage_block, block_id, data, length=len(data), timeout=self.write_timeout
                    )
                finally:
                    slots.release()

            async def put(data: bytes) -> None:
                await slots.acquire()  # at most STAGE_CONCURRENCY blocks held in memory and in flight
                failed = [t for t in tasks if t.done() and t.exception()]
                if failed:
                    slots.release()
                    raise failed[0].exception()
                block_id = next(ids)
                staged.append(block_id)
                tasks.append(asyncio.create_task(stage(block_id, data)))

            buffer = bytearray()
            try:
                async for chunk in chunks:
                    buffer += chunk
                    while len(buffer) >= BLOCK_SIZE:
                        await put(bytes(buffer[:BLOCK_SIZE]))
                        del buffer[:BLOCK_SIZE]
                if buffer:
                    await put(bytes(buffer))
                await asyncio.gather(*tasks)
            except BaseException:
                # The body did not arrive whole (or a block failed): commit nothing.
                for task in tasks:
                    task.cancel()
                raise
            await asyncio.to_thread(self._commit, blob, staged)

        def log_artifact_from_stream(
            self, stream: BinaryIO, artifact_file_name: str, artifact_path: str | None = None
        ) -> None:
            """The same for MLflow's Flask handler (blocks staged one at a time)."""
            blob = self._blob(artifact_path, artifact_file_name)
            ids = block_ids(uuid.uuid4().hex[:16])
            staged = []
            while data := stream.read(BLOCK_SIZE):
                staged.append(next(ids))
                blob.stage_block(staged[-1], data, length=len(data), timeout=self.write_timeout)
            self._commit(blob, staged)

        def _commit(self, blob: Any, staged: list[str]) -> None:
            from azure.storage.blob import BlobBlock, ContentSettings
            from mlflow.utils.mime_type_utils import _guess_mime_type

            settings = ContentSettings(content_type=_guess_mime_type(blob.blob_name))
            blob.commit_block_list(
                [BlobBlock(block_id=block_id) for block_id in staged],
                content_settings=settings,
                timeout=self.write_timeout,
            )

        def create_multipart_upload(self, local_file, num_parts=1, artifact_path=None):
            raise _UnsupportedMultipartUploadException()

        def open_download(self, artifact_path: str) -> tuple[int, Iterator[bytes]]:
            """(size, chunks) of one artifact file, read in ranges of its current version."""
            from azure.core import MatchConditions
            from azure.core.exceptions import ResourceNotFoundError

            blob = self._blob(artifact_path)
            try:
                properties = blob.get_blob_properties(timeout=self.write_timeout)
            except ResourceNotFoundError as error:
                raise MlflowException(
                    f"No such file: '{artifact_path}'", error_code=RESOURCE_DOES_NOT_EXIST
                ) from error
            size, etag = properties.size, properties.etag

            def read(offset: int) -> bytes:
                return blob.download_blob(
                    offset=offset,
                    length=min(DOWNLOAD_CHUNK, size - offset),
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                    timeout=self.write_timeout,
                ).readall()

            def chunks() -> Iterator[bytes]:
                # One range read ahead while the previous one is sent: bounded at two in memory.
                ahead: dict[str, Any] = {}

                def fetch(offset: int) -> threading.Thread:
                    def run() -> None:
                        try:
                            ahead["data"] = read(offset)
                        except BaseException as error:  # handed to the response's iterator
                            ahead["error"] = error

                    thread = threading.Thread(target=run, daemon=True)
                    thread.start()
                    return thread

                offset, pending = 0, fetch(0) if size else None
                while pending is not None:
                    pending.join()
                    if "error" in ahead:
                        raise ahead.pop("error")
                    data = ahead.pop("data")
                    offset += len(data)
                    pending = fetch(offset) if offset < size else None
                    yield data

            return size, chunks()

    return StreamingAzureBlobArtifactRepository


def install(fastapi_app: Any) -> None:
    """Make the server's artifact repository stream (when it is Azure Blob) and put the streaming
    download route ahead of MLflow's own on `fastapi_app` (behind the same middleware)."""
    from fastapi.routing import APIRoute
    from mlflow.server import handlers
    from mlflow.store.artifact.azure_blob_artifact_repo import AzureBlobArtifactRepository

    streaming = streaming_repository_class()
    original_repository = handlers._get_artifact_repo_mlflow_artifacts
    lock = threading.Lock()

    def artifact_repository():
        repo = original_repository()
        if type(repo) is AzureBlobArtifactRepository:
            with lock:
                if type(repo) is AzureBlobArtifactRepository:
                    repo.__class__ = streaming  # the same client and settings, streamed transfers
        return repo

    handlers._get_artifact_repo_mlflow_artifacts = artifact_repository
    if getattr(fastapi_app.state, "mlflow_aks_streaming_downloads", False):
        return
    download = _download_endpoint(streaming)
    routes = [APIRoute(path, download, methods=["GET"]) for path in ARTIFACT_ROUTES]
    fastapi_app.router.routes[:0] = routes
    fastapi_app.state.mlflow_aks_streaming_downloads = True


def _download_endpoint(streaming: type):
    import json

    from fastapi.responses import JSONResponse, StreamingResponse
    from mlflow.exceptions import MlflowException
    from mlflow.server import artifact_router, handlers
    from mlflow.utils.mime_type_utils import _guess_mime_type
    from mlflow.utils.uri import validate_path_is_safe

    async def download_artifact(artifact_path: str):
        """MLflow's download route, streamed; any other repository goes to MLflow's own route."""
        repo = (
            handlers._get_artifact_repo_mlflow_artifacts()
            if artifact_router._is_serving_proxied_artifacts()
            else None
        )
        if not isinstance(repo, streaming):
            return await artifact_router.download_artifact(artifact_path)
        try:
            path = artifact_router._get_workspace_scoped_path(validate_path_is_safe(artifact_path))
            size, chunks = await asyncio.to_thread(repo.open_download, path)
        except MlflowException as e:
            return JSONResponse(
                status_code=e.get_http_status_code(), content=json.loads(e.serialize_as_json())
            )
        filename = posixpath.basename(path)
        return StreamingResponse(
            chunks,  # a sync iterator: Starlette reads it in its thread pool
            headers={
                "Content-Type": _guess_mime_type(filename),
                "Content-Disposition": artifact_router._content_disposition(filename),
                "Content-Length": str(size),
                "X-Content-Type-Options": "nosniff",
            },
        )

    return download_artifact
