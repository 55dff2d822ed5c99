"""images/tracking-server/backup.py's choices, without a database: which backup `latest` is, which backup a
restore to a time starts from, and what its scripts and client option file say. The e2e tests
(tests/e2e/test_backup_e2e.py) run the same code against MariaDB and Azurite."""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests import chart_render as cr


@pytest.fixture(scope="module")
def tool():
    name = "mlflow_aks_image_backup"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, cr.REPO_ROOT / "images/tracking-server/backup.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


T0 = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def backup(tool, minutes: float, kind: str, runs: int = 10, **metadata) -> dict:
    at = T0 + timedelta(minutes=minutes)
    name = f"mlflow-{at.strftime('%Y%m%dT%H%M%S%fZ')}-{kind}{tool.SUFFIX}"
    metadata = {
        "reason": kind,
        "runs": str(runs),
        "snapshot_at": at.isoformat(),
        "complete": "true",
        **metadata,
    }
    return {"name": name, "kind": kind, "size": 1, "metadata": metadata}


class Backups:
    """A Destination's listings, as backup.py reads them."""

    def __init__(self, tool, backups: list[dict], markers: dict | None = None):
        self.tool, self.backups, self.markers, self.where = tool, backups, markers or {}, "stub"

    def list(self) -> list[dict]:
        return sorted(self.backups, key=lambda b: b["name"])

    def completed_under(self, path: str) -> dict:
        return self.markers


def test_latest_is_the_newest_backup_of_the_teams_data_never_a_pre_restore_copy(tool):
    backups = [
        backup(tool, 0, "scheduled"), backup(tool, 10, "post-restore"), backup(tool, 20, "pre-restore"),
    ]  # fmt: skip
    destination = Backups(tool, backups)
    assert tool.Destination.resolve(destination, "latest")["name"] == backups[1]["name"]
    assert tool.Destination.resolve(destination, backups[2]["name"])["kind"] == "pre-restore"  # by name
    only_copies = Backups(tool, [backup(tool, 20, "pre-restore")])
    with pytest.raises(tool.BackupError, match="only pre-restore copies: restore one by name"):
        tool.Destination.resolve(only_copies, "latest")


def test_kinds_come_from_metadata_or_from_names_of_older_backups(tool):
    assert tool.kind_of("mlflow-20261202T020000000000Z-scheduled.sql.gz", {}) == "scheduled"
    assert tool.kind_of("mlflow-20261202T020000000000Z-pre-migration.sql.gz", {}) == "pre-migration"
    assert tool.kind_of("x.sql.gz", {"reason": "manual"}) == "manual"


def coordinates(file: str = "binlog.000003", position: int = 400) -> dict:
    return {"binlog_lineage": "uuid-1", "binlog_file": file, "binlog_position": str(position),
            "binlog_exact": "true"}  # fmt: skip


def test_a_restore_to_a_time_starts_from_the_newest_backup_before_it_with_binary_log_coordinates(tool):
    backups = [
        backup(tool, 0, "scheduled", **coordinates("binlog.000001")),
        backup(tool, 30, "manual", **coordinates("binlog.000004")),
        backup(tool, 50, "manual"),  # taken with binary logs off: nothing replays from it
        backup(tool, 90, "scheduled", **coordinates("binlog.000009")),
    ]
    destination = Backups(tool, backups)
    base = tool._base_for(destination, T0 + timedelta(minutes=60))
    assert base["backup"] == backups[1]["name"] and base["binlog_file"] == "binlog.000004"
    with pytest.raises(tool.BackupError, match="no backup taken with binary logs on before"):
        tool._base_for(destination, T0 - timedelta(minutes=1))


def test_after_a_restore_a_restore_to_a_later_time_starts_from_the_backup_of_the_restored_data(tool):
    """Restores are not in the binary logs: replaying across one would rebuild the history it replaced."""
    restored_at = T0 + timedelta(minutes=40)
    marker = {"uuid-1/restored-x": {"restored": "b", "restored_at": restored_at.isoformat()}}
    older = backup(tool, 30, "manual", **coordinates("binlog.000004"))
    # The backup of the restored data, taken seconds after the restore (the server was stopped meanwhile).
    after = backup(
        tool, 40.2, "post-restore", restored_at=restored_at.isoformat(), **coordinates("binlog.000006")
    )
    with_backup = Backups(tool, [older, after], marker)
    # A time between the restore and that backup's snapshot: still that backup, counted from the restore.
    assert tool._base_for(with_backup, restored_at + timedelta(seconds=5))["backup"] == after["name"]
    assert tool._base_for(with_backup, restored_at - timedelta(seconds=5))["backup"] == older["name"]
    without = Backups(tool, [older], marker)
    with pytest.raises(tool.BackupError, match="cannot be replayed across it"):
        tool._base_for(without, restored_at + timedelta(minutes=1))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2026-12-02 14:30", "needs a time zone"),
        ("yesterday", "must be a time like"),
        ("2026-12-02T14:30:00Z", None),
    ],
)
def test_the_time_of_a_restore_is_explicit_about_its_zone(tool, text, problem):
    if problem:
        with pytest.raises(tool.BackupError, match=problem):
            tool._parse_time(text)
    else:
        assert tool._parse_time(text) == datetime(2026, 12, 2, 14, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("password", "written"),
    [("Abc123xyz", '"Abc123xyz"'), ('p"a\\ss#;w', "'p\"a\\\\ss#;w'"), ("it's", '"it\'s"')],
)
def test_the_client_option_file_is_private_and_quotes_the_password(tool, tmp_path, password, written):
    database = tool.Database("tracking", "mlflow", "mysql", 3306, "mlflow", password)
    path = tool._client_options(database, str(tmp_path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Path(path).read_text() == f'[client]\nhost="mysql"\nport=3306\nuser="mlflow"\npassword={written}\n'


def test_a_password_no_option_file_can_hold_is_refused(tool, tmp_path):
    database = tool.Database("tracking", "mlflow", "mysql", 3306, "mlflow", "both\"and'")
    with pytest.raises(tool.BackupError, match="both quote characters"):
        tool._client_options(database, str(tmp_path))
