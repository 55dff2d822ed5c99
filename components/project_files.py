"""Uploads `mlflow_project/` to the Azure file share on `pulumi up` (the portal step of the original).

A Pulumi dynamic resource: its inputs carry every file's SHA-256 and content, so `pulumi up` diffs by
content hash, uploads only what changed, and deletes remote files that were removed locally.
`pulumi destroy` removes the uploaded files (the share itself belongs to components/project_share.py).

The provider talks to the share through `ShareClient` from azure-storage-file-share with the project
files account's key (a Pulumi secret, also kept secret in state); that key opens no artifact. Tests give
it a fake client instead.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import pulumi
from pulumi import dynamic

PROJECT_DIR = Path(__file__).resolve().parent.parent / "mlflow_project"
# Local clutter that is never part of the project.
_SKIPPED_PARTS = {"__pycache__", ".ipynb_checkpoints", "mlruns", ".pytest_cache"}
_SKIPPED_SUFFIXES = {".pyc", ".pyo"}
# What Azure Storage answers a key-signed request on an account with shared key access off.
KEY_ACCESS_REFUSED = "KeyBasedAuthenticationNotPermitted"


def collect_files(root: Path) -> dict[str, bytes]:
    """The project's files: relative POSIX path -> content, without caches and hidden files."""
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or path.suffix in _SKIPPED_SUFFIXES:
            continue
        if any(part in _SKIPPED_PARTS or part.startswith(".") for part in relative.parts):
            continue
        files[relative.as_posix()] = path.read_bytes()
    return files


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def content_hash(hashes: dict[str, str]) -> str:
    """One hash over every (path, file hash): changes when any file is added, removed or edited."""
    return sha256("\n".join(f"{path}\0{digest}" for path, digest in sorted(hashes.items())).encode())


class ShareClientLike(Protocol):
    """The part of `azure.storage.fileshare.ShareClient` the provider uses."""

    def get_directory_client(self, directory_path: str) -> Any: ...

    def get_file_client(self, file_path: str) -> Any: ...


def azure_share_client(account_name: str, share_name: str, account_key: str) -> ShareClientLike:
    from azure.storage.fileshare import ShareClient

    return ShareClient(
        account_url=f"https://{account_name}.file.core.windows.net",
        share_name=share_name,
        credential=account_key,
    )


class ProjectFilesProvider(dynamic.ResourceProvider):
    """Create/diff/update/delete of the uploaded project files. Inputs (and outputs, minus contents):
    `account_name`, `share_name`, `directory`, `account_key`, `hashes` {path: sha256},
    `content_hash`; inputs also carry `contents` {path: base64}."""

    # Only the (secret) key is sensitive; the provider code itself is not.
    serialize_as_secret_always = False

    def __init__(self, client_factory: Callable[[str, str, str], ShareClientLike] | None = None):
        super().__init__()
        self._client_factory = client_factory

    def _client(self, props: dict[str, Any]) -> ShareClientLike:
        factory = self._client_factory or azure_share_client
        return factory(props["account_name"], props["share_name"], props["account_key"])

    @staticmethod
    def _id(props: dict[str, Any]) -> str:
        return f"{props['account_name']}/{props['share_name']}/{props['directory']}"

    @staticmethod
    def _outputs(props: dict[str, Any]) -> dict[str, Any]:
        # Contents stay out of the state: the hashes say what is uploaded.
        return {key: value for key, value in props.items() if key != "contents"}

    def _upload(
        self, share: ShareClientLike, directory: str, props: dict[str, Any], paths: list[str]
    ) -> None:
        from azure.core.exceptions import ResourceExistsError

        created: set[PurePosixPath] = set()
        for path in sorted(paths):
            remote = PurePosixPath(directory, path)
            # Azure Files has no implicit directories: create each parent, shallowest first.
            for parent in reversed(remote.parents[:-1]):
                if parent in created:
                    continue
                with contextlib.suppress(ResourceExistsError):
                    share.get_directory_client(str(parent)).create_directory()
                created.add(parent)
            share.get_file_client(str(remote)).upload_file(base64.b64decode(props["contents"][path]))

    @staticmethod
    def _delete(share: ShareClientLike, directory: str, paths: list[str]) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        for path in sorted(paths):
            with contextlib.suppress(ResourceNotFoundError):
                share.get_file_client(str(PurePosixPath(directory, path))).delete_file()

    @staticmethod
    def _remove_empty_directories(
        share: ShareClientLike, directory: str, removed: list[str], kept: list[str], *, root: bool
    ) -> None:
        """Delete the directories that held removed files and hold no kept one, deepest first; with
        `root`, `directory` too. A directory still holding someone else's files fails and stays."""
        from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

        base = PurePosixPath(directory)
        in_use = {parent for path in kept for parent in PurePosixPath(directory, path).parents}
        candidates = {
            parent
            for path in removed
            for parent in PurePosixPath(directory, path).parents
            if len(parent.parts) > len(base.parts)
        }
        if root:
            candidates.add(base)
        for candidate in sorted(candidates - in_use, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(ResourceNotFoundError, HttpResponseError):
                share.get_directory_client(str(candidate)).delete_directory()

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        share = self._client(props)
        self._upload(share, props["directory"], props, list(props["hashes"]))
        return dynamic.CreateResult(id_=self._id(props), outs=self._outputs(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        replaces = [
            key for key in ("account_name", "share_name", "directory") if olds.get(key) != news.get(key)
        ]
        changed = bool(replaces) or olds.get("content_hash") != news.get("content_hash")
        changed = changed or olds.get("account_key") != news.get("account_key")
        return dynamic.DiffResult(changes=changed, replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        share = self._client(news)
        directory = news["directory"]
        old_hashes, new_hashes = olds.get("hashes", {}), news["hashes"]
        changed = [path for path, digest in new_hashes.items() if old_hashes.get(path) != digest]
        removed = [path for path in old_hashes if path not in new_hashes]
        self._upload(share, directory, news, changed)
        self._delete(share, directory, removed)
        self._remove_empty_directories(share, directory, removed, list(new_hashes), root=False)
        return dynamic.UpdateResult(outs=self._outputs(news))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        from azure.core.exceptions import HttpResponseError

        share = self._client(props)
        paths = list(props.get("hashes", {}))
        try:
            self._delete(share, props["directory"], paths)
            self._remove_empty_directories(share, props["directory"], paths, [], root=True)
        except HttpResponseError as error:
            # Files an earlier version uploaded to the share in the data account, which no longer takes
            # its key (allowSharedKeyAccess false; error code from
            # https://learn.microsoft.com/azure/storage/common/shared-key-authorization-prevent): they
            # stay with that old share, which nothing mounts any more.
            if str(getattr(error, "error_code", "")) != KEY_ACCESS_REFUSED:
                raise


class ProjectFiles(dynamic.Resource, module="mlflow-aks", name="ProjectFiles"):
    """The project directory's files on the share, kept in step with `source` on every `pulumi up`."""

    content_hash: pulumi.Output[str]
    directory: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        account_name: pulumi.Input[str],
        share_name: pulumi.Input[str],
        account_key: pulumi.Input[str],
        source: Path = PROJECT_DIR,
        directory: str | None = None,
        provider: ProjectFilesProvider | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        files = collect_files(source)
        hashes = {path: sha256(content) for path, content in files.items()}
        props = {
            "account_name": account_name,
            "share_name": share_name,
            "directory": directory or source.name,
            "account_key": pulumi.Output.secret(account_key),
            "hashes": hashes,
            "content_hash": content_hash(hashes),
            "contents": {path: base64.b64encode(content).decode() for path, content in files.items()},
        }
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["account_key"])
        )
        super().__init__(provider or ProjectFilesProvider(), name, props, opts)
