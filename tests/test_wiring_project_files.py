"""The project-files dynamic provider (components/project_files.py) against an in-memory file share.

`FakeShare` behaves like the parts of azure-storage-file-share's ShareClient the provider uses,
including Azure Files' rules: a file needs its parent directory, a directory must be empty to be
deleted, and missing or existing items raise the SDK's own exceptions.
"""

from __future__ import annotations

import base64
from pathlib import Path, PurePosixPath

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError

from components.project_files import (
    KEY_ACCESS_REFUSED,
    ProjectFilesProvider,
    collect_files,
    content_hash,
    sha256,
)


class FakeShare:
    def __init__(self) -> None:
        self.directories: set[str] = set()
        self.files: dict[str, bytes] = {}
        self.uploads: list[str] = []
        self.clients: list[tuple[str, str, str]] = []

    # ShareClient surface
    def get_directory_client(self, directory_path: str) -> FakeDirectory:
        return FakeDirectory(self, directory_path)

    def get_file_client(self, file_path: str) -> FakeFile:
        return FakeFile(self, file_path)

    def factory(self, account: str, share: str, key: str) -> FakeShare:
        self.clients.append((account, share, key))
        return self


class FakeDirectory:
    def __init__(self, share: FakeShare, path: str) -> None:
        self.share, self.path = share, path

    def create_directory(self) -> None:
        parent = str(PurePosixPath(self.path).parent)
        if parent != "." and parent not in self.share.directories:
            raise ResourceNotFoundError(f"parent of {self.path} does not exist")
        if self.path in self.share.directories:
            raise ResourceExistsError(f"{self.path} exists")
        self.share.directories.add(self.path)

    def delete_directory(self) -> None:
        if self.path not in self.share.directories:
            raise ResourceNotFoundError(self.path)
        prefix = self.path + "/"
        if any(p.startswith(prefix) for p in self.share.files) or any(
            d.startswith(prefix) for d in self.share.directories
        ):
            raise HttpResponseError(f"DirectoryNotEmpty: {self.path}")
        self.share.directories.remove(self.path)


class FakeFile:
    def __init__(self, share: FakeShare, path: str) -> None:
        self.share, self.path = share, path

    def upload_file(self, data: bytes) -> None:
        parent = str(PurePosixPath(self.path).parent)
        if parent != "." and parent not in self.share.directories:
            raise ResourceNotFoundError(f"ParentNotFound: {parent}")
        self.share.files[self.path] = bytes(data)
        self.share.uploads.append(self.path)

    def delete_file(self) -> None:
        if self.path not in self.share.files:
            raise ResourceNotFoundError(self.path)
        del self.share.files[self.path]


def props(files: dict[str, bytes], directory: str = "mlflow_project", share: str = "mlflow-projects") -> dict:
    hashes = {path: sha256(content) for path, content in files.items()}
    return {
        "account_name": "mlflowdata1234",
        "share_name": share,
        "directory": directory,
        "account_key": "a2V5",
        "hashes": hashes,
        "content_hash": content_hash(hashes),
        "contents": {path: base64.b64encode(content).decode() for path, content in files.items()},
    }


VERSION_1 = {
    "MLproject": b"name: demo\n",
    "train.py": b"print('train')\n",
    "lib/features.py": b"X = 1\n",
    "lib/deep/util.py": b"Y = 2\n",
}


@pytest.fixture
def share() -> FakeShare:
    return FakeShare()


@pytest.fixture
def provider(share: FakeShare) -> ProjectFilesProvider:
    return ProjectFilesProvider(client_factory=share.factory)


def remote(share: FakeShare, directory: str = "mlflow_project") -> dict[str, bytes]:
    prefix = directory + "/"
    return {path[len(prefix) :]: data for path, data in share.files.items() if path.startswith(prefix)}


def test_create_uploads_every_file_under_its_directories(provider, share):
    result = provider.create(props(VERSION_1))
    assert remote(share) == VERSION_1
    assert {"mlflow_project", "mlflow_project/lib", "mlflow_project/lib/deep"} <= share.directories
    assert result.id == "mlflowdata1234/mlflow-projects/mlflow_project"
    assert share.clients == [("mlflowdata1234", "mlflow-projects", "a2V5")]
    # The state keeps hashes and the key (secret), not the contents.
    assert "contents" not in result.outs
    assert result.outs["hashes"] == {path: sha256(data) for path, data in VERSION_1.items()}
    assert result.outs["account_key"] == "a2V5"


def test_create_tolerates_directories_that_already_exist(provider, share):
    share.directories.add("mlflow_project")
    provider.create(props(VERSION_1))
    assert remote(share) == VERSION_1


def test_diff_is_driven_by_the_content_hash(provider):
    old = provider.create(props(VERSION_1)).outs
    assert provider.diff("id", old, props(VERSION_1)).changes is False
    edited = dict(VERSION_1, **{"train.py": b"print('better')\n"})
    result = provider.diff("id", old, props(edited))
    assert result.changes is True and result.replaces == []
    removed = {k: v for k, v in VERSION_1.items() if k != "lib/features.py"}
    assert provider.diff("id", old, props(removed)).changes is True


def test_diff_replaces_when_the_location_changes(provider):
    old = provider.create(props(VERSION_1)).outs
    assert provider.diff("id", old, props(VERSION_1, share="other-share")).replaces == ["share_name"]
    assert provider.diff("id", old, props(VERSION_1, directory="project2")).replaces == ["directory"]


def test_update_uploads_changes_and_deletes_files_removed_locally(provider, share):
    old = provider.create(props(VERSION_1)).outs
    share.uploads.clear()
    version_2 = {
        "MLproject": VERSION_1["MLproject"],
        "train.py": b"print('v2')\n",
        "evaluate.py": b"print('eval')\n",
        "lib/features.py": VERSION_1["lib/features.py"],
    }
    result = provider.update("id", old, props(version_2))

    assert remote(share) == version_2
    assert sorted(share.uploads) == ["mlflow_project/evaluate.py", "mlflow_project/train.py"]
    # lib/deep held only the removed file: gone; lib still holds a file: kept.
    assert "mlflow_project/lib/deep" not in share.directories
    assert "mlflow_project/lib" in share.directories
    assert result.outs["content_hash"] == props(version_2)["content_hash"]


def test_update_with_nothing_changed_touches_nothing(provider, share):
    old = provider.create(props(VERSION_1)).outs
    share.uploads.clear()
    provider.update("id", old, props(VERSION_1))
    assert share.uploads == []
    assert remote(share) == VERSION_1


def test_delete_removes_the_uploaded_files_and_directories(provider, share):
    outs = provider.create(props(VERSION_1)).outs
    provider.delete("id", outs)
    assert share.files == {}
    assert share.directories == set()


def test_delete_leaves_files_it_did_not_upload(provider, share):
    outs = provider.create(props(VERSION_1)).outs
    share.files["mlflow_project/notes.txt"] = b"someone else's"
    provider.delete("id", outs)
    assert share.files == {"mlflow_project/notes.txt": b"someone else's"}
    assert share.directories == {"mlflow_project"}


def test_delete_after_files_vanished_remotely_still_succeeds(provider, share):
    outs = provider.create(props(VERSION_1)).outs
    share.files.clear()
    provider.delete("id", outs)
    assert share.directories == set()


def _refusing(error_code: str):
    """A share whose every file call fails as Azure Storage does, with `error_code` (HTTP 403)."""

    class Refusing(FakeShare):
        def get_file_client(self, file_path: str):
            error = HttpResponseError(f"{error_code}: Key based authentication is not permitted")
            error.error_code = error_code
            raise error

    return Refusing()


def test_delete_leaves_files_on_an_account_that_no_longer_takes_its_key(share):
    """Upgrading a stack whose project share was in the data account: the replaced upload is deleted after
    that account turned shared key access off. Its files stay on the old share, and `pulumi up` finishes."""
    outs = ProjectFilesProvider(client_factory=share.factory).create(props(VERSION_1)).outs
    refusing = _refusing(KEY_ACCESS_REFUSED)
    ProjectFilesProvider(client_factory=refusing.factory).delete("id", outs)
    # Any other refusal is still an error.
    other = _refusing("AuthorizationFailure")
    with pytest.raises(HttpResponseError):
        ProjectFilesProvider(client_factory=other.factory).delete("id", outs)


def test_collect_files_skips_caches_and_hidden_files(tmp_path: Path):
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "pkg" / "m.py").write_text("M = 1\n")
    (tmp_path / ".env").write_text("SECRET=1\n")
    (tmp_path / "mlruns").mkdir()
    (tmp_path / "mlruns" / "meta.yaml").write_text("x: 1\n")
    (tmp_path / "MLproject").write_text("name: x\n")
    assert collect_files(tmp_path) == {"MLproject": b"name: x\n", "pkg/m.py": b"M = 1\n"}


def test_content_hash_changes_with_any_path_or_content():
    base = {"a.py": sha256(b"a"), "b.py": sha256(b"b")}
    assert content_hash(base) == content_hash(dict(reversed(list(base.items()))))
    assert content_hash(base) != content_hash({"a.py": sha256(b"a")})
    assert content_hash(base) != content_hash({"a.py": sha256(b"a"), "c.py": sha256(b"b")})
    assert content_hash(base) != content_hash({"a.py": sha256(b"a2"), "b.py": sha256(b"b")})
