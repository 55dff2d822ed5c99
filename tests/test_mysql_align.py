"""charts/mysql aligns the database accounts with the release's secrets at every start on existing data.

A data directory kept from an earlier stack (or a disk adopted by a new one) holds that stack's passwords.
The StatefulSet's command runs the server with `--init-file=align.sql` whenever the data directory
already exists, and align.sql (rendered into the chart's Secret) sets root's and the application
user's passwords to the current ones and restores the user's databases and grants. These tests run
the rendered command with a stand-in entrypoint, and the rendered SQL on a real server (Debian's
MariaDB, the local stack's database; the chart runs MySQL 8.4, which accepts the same statements).
"""

from __future__ import annotations

import base64
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from local import free_port
from local import mariadb as local_mariadb
from local.procs import stop
from tests import chart_render as cr

# Passwords a quoting mistake would break: quotes, a backslash, SQL and URL specials.
OLD = {"root": "old-root-Pw1", "user": "old-user-Pw1"}
NEW = {"root": "n'ew\\Ro\"ot%_1", "user": "p'a\\ss:w@rd;--"}


@pytest.fixture(scope="module")
def mysql_objects(helm_bin, tmp_path_factory) -> list[dict]:
    values = {
        "auth": {
            "rootPassword": NEW["root"],
            "password": NEW["user"],
            "username": "mlflow",
            "database": "mlflow",
            "extraDatabases": ["mlflow_auth"],
        },
        "persistence": {"existingClaim": "mlflow-mysql-data"},
        # MariaDB runs the rendered SQL below; the binary-log grants name MySQL 8.4's dynamic privileges,
        # which MariaDB does not have (test_binary_logs_are_written_and_their_grants_given checks them).
        "binaryLogs": {"enabled": False},
    }
    return cr.render(helm_bin, cr.MYSQL_CHART, "mlflow", values, tmp_path_factory.mktemp("mysql"))


@pytest.mark.parametrize("enabled", [True, False], ids=["binary-logs", "no-binary-logs"])
def test_binary_logs_are_written_and_their_grants_given(helm_bin, tmp_path, enabled):
    """With binary logs (the default): row format, synced at every commit, kept `expireSeconds` on disk,
    triggers creatable by the application user; and the application user gets exactly what shipping and
    point-in-time recovery need, on first start and on every start with existing data. Without: none."""
    values = {
        "auth": {"rootPassword": "r", "password": "p", "username": "mlflow", "database": "mlflow"},
        "persistence": {"existingClaim": "claim"},
        "binaryLogs": {"enabled": enabled, "expireSeconds": 7200},
    }
    objects = cr.render(helm_bin, cr.MYSQL_CHART, "mlflow", values, tmp_path)
    args = _container(objects)["args"]
    initdb = cr.one(objects, "ConfigMap")["data"]["10-extra-databases.sql"]
    grants = [
        "GRANT RELOAD, REPLICATION CLIENT, REPLICATION SLAVE ON *.* TO 'mlflow'@'%';",
        "GRANT SESSION_VARIABLES_ADMIN, REPLICATION_APPLIER ON *.* TO 'mlflow'@'%';",
    ]
    if enabled:
        assert "--disable-log-bin" not in args
        for arg in ("--log-bin=binlog", "--binlog-format=ROW", "--binlog-row-image=FULL", "--sync-binlog=1",
                    "--innodb-flush-log-at-trx-commit=1", "--binlog-expire-logs-seconds=7200",
                    "--log-bin-trust-function-creators=ON"):  # fmt: skip
            assert arg in args
        for grant in grants:
            assert grant in _align_sql(objects).splitlines()
            assert grant in [line.strip() for line in initdb.splitlines()]
        assert "BINLOG_ADMIN" not in _align_sql(objects)  # it could purge logs not shipped yet
    else:
        assert "--disable-log-bin" in args and not [a for a in args if a.startswith("--log-bin")]
        assert not any(g.split(" ON ")[0] in _align_sql(objects) + initdb for g in grants)


def _container(objects: list[dict]) -> dict:
    return cr.one(objects, "StatefulSet")["spec"]["template"]["spec"]["containers"][0]


def _align_sql(objects: list[dict]) -> str:
    return base64.b64decode(cr.one(objects, "Secret")["data"]["align.sql"]).decode()


def test_align_sql_is_mounted_where_the_command_reads_it(mysql_objects):
    sts = cr.one(mysql_objects, "StatefulSet")
    container, pod = _container(mysql_objects), sts["spec"]["template"]["spec"]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "align"]
    [volume] = [v for v in pod["volumes"] if v["name"] == "align"]
    assert volume["secret"]["secretName"] == cr.one(mysql_objects, "Secret")["metadata"]["name"]
    [item] = volume["secret"]["items"]
    assert item["key"] == "align.sql"
    assert f"--init-file={mount['mountPath']}/{item['path']}" in container["command"][2]
    assert volume["secret"]["defaultMode"] == 0o440 and mount["readOnly"] is True
    # A new Secret (new passwords) rolls the pod, so the next start applies them.
    assert "checksum/secret" in sts["spec"]["template"]["metadata"]["annotations"]


@pytest.mark.parametrize("existing", [True, False], ids=["existing-data", "empty-volume"])
def test_the_command_aligns_only_an_existing_data_directory(mysql_objects, tmp_path, existing):
    """Existing data: the entrypoint gets --init-file. An empty volume: the image's own first-start
    initialisation sets the passwords (an init file there would lock it out of its own set-up)."""
    container = _container(mysql_objects)
    shim = tmp_path / "bin" / "docker-entrypoint.sh"
    shim.parent.mkdir()
    shim.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    datadir = tmp_path / "data"
    if existing:
        (datadir / "mysql").mkdir(parents=True)
    args = [a if not a.startswith("--datadir=") else f"--datadir={datadir}" for a in container["args"]]
    assert len(args) == len(container["args"]) and any(a.startswith("--datadir=") for a in args)
    # The run volume (a first start writes there) translated to this test's directory.
    [run] = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == "run"]
    script = container["command"][2].replace(run, str(tmp_path / "run"))
    done = subprocess.run(
        [*container["command"][:2], script, *container["command"][3:], *args],
        env={"PATH": f"{shim.parent}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    passed = done.stdout.splitlines()
    assert passed[0] == "mysqld" and passed[1 : 1 + len(args)] == args
    init_files = [a for a in passed if a.startswith("--init-file=")]
    assert init_files == (["--init-file=/etc/mysql/align/align.sql"] if existing else [])


@pytest.fixture
def old_database() -> Iterator[tuple[local_mariadb.MariaDBPaths, int]]:
    """A MariaDB data directory made with the *old* passwords, holding a row of MLflow data."""
    # Not pytest's tmp_path: mariadbd runs as user `mysql`, who cannot enter /tmp/pytest-of-root (0700).
    workdir = Path(tempfile.mkdtemp(prefix="mlflow-aks-align-"))
    os.chmod(workdir, 0o755)  # noqa: S103
    paths = local_mariadb.MariaDBPaths(workdir / "db")
    port = free_port()
    local_mariadb.initialise(paths)
    proc = local_mariadb.start(paths, port)
    try:
        local_mariadb.wait_ready(paths, proc)
        local_mariadb.sql(
            paths,
            # The old passwords are this file's constants (letters, digits and '-').
            f"""CREATE DATABASE mlflow; CREATE USER 'mlflow'@'%' IDENTIFIED BY '{OLD["user"]}';
            GRANT ALL PRIVILEGES ON mlflow.* TO 'mlflow'@'%';
            CREATE TABLE mlflow.runs (run_uuid VARCHAR(32) PRIMARY KEY);
            INSERT INTO mlflow.runs VALUES ('kept-run');
            ALTER USER 'root'@'localhost' IDENTIFIED BY '{OLD["root"]}';""",  # noqa: S608
        )
    finally:
        stop(proc, timeout=30)
    yield paths, port
    shutil.rmtree(workdir, ignore_errors=True)


def _connect(port: int, user: str, password: str, database: str | None = None) -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", port=port, user=user, password=password, database=database)


def _login_when_up(paths, port: int, proc, user: str, password: str, database: str) -> pymysql.Connection:
    """Log in over TCP once the server listens; an access denial is an answer, not a wait."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return _connect(port, user, password, database)
        except pymysql.err.OperationalError as error:
            if error.args[0] == 1045 or time.monotonic() > deadline:
                raise
            if not proc.alive():
                pytest.fail(f"MariaDB stopped:\n{paths.log.read_text()[-2000:]}")
            time.sleep(0.25)


def test_align_sql_gives_an_old_data_directory_the_new_passwords(mysql_objects, old_database):
    """Started with the rendered align.sql as its init file, a server whose accounts hold another stack's
    passwords accepts only the new ones, keeps its data, and the user has all its databases again."""
    paths, port = old_database
    init_file = paths.root / "align.sql"
    init_file.write_text(_align_sql(mysql_objects))
    if os.geteuid() == 0:
        shutil.chown(init_file, "mysql", "mysql")
    proc = local_mariadb.start(paths, port, extra_args=[f"--init-file={init_file}"])
    try:
        with (
            _login_when_up(paths, port, proc, "mlflow", NEW["user"], "mlflow") as conn,
            conn.cursor() as cursor,
        ):
            cursor.execute("SELECT run_uuid FROM runs")
            assert cursor.fetchall() == (("kept-run",),)
            cursor.execute("SHOW DATABASES")
            assert {"mlflow", "mlflow_auth"} <= {row[0] for row in cursor.fetchall()}
            cursor.execute("CREATE TABLE mlflow_auth.users (id INT)")  # the grant on the extra database
            # A restore's staging databases beside each database are the user's to make and drop, and
            # the grants name exactly those (`_` escaped), not a pattern.
            for database in ("mlflow", "mlflow_auth"):
                for suffix in _backup_tool().STAGING_SUFFIXES:
                    cursor.execute(f"CREATE DATABASE `{database}{suffix}`")
                    cursor.execute(f"DROP DATABASE `{database}{suffix}`")
            with pytest.raises(pymysql.err.OperationalError) as refused:
                cursor.execute("CREATE DATABASE `mlflowXrestore`")
            assert refused.value.args[0] == 1044  # access denied to that database
        with pytest.raises(pymysql.err.OperationalError) as denied:
            _connect(port, "mlflow", OLD["user"])
        assert denied.value.args[0] == 1045
        # root (local, through the socket) takes the new password too.
        client = local_mariadb.binaries()["mariadb"]
        root = subprocess.run(
            [client, "--no-defaults", f"--socket={paths.socket}", "--user=root", f"--password={NEW['root']}",
             "--batch", "-e", "SELECT COUNT(*) FROM mlflow.runs"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert root.returncode == 0, root.stderr
        assert root.stdout.split()[-1] == "1"
    finally:
        stop(proc, timeout=30)


def _backup_tool():
    """images/tracking-server/backup.py (its dataclasses need it in sys.modules)."""
    name = "mlflow_aks_image_backup"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, cr.REPO_ROOT / "images/tracking-server/backup.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def test_the_local_stack_grants_the_staging_databases_backup_py_uses():
    assert local_mariadb.RESTORE_STAGING_SUFFIXES == _backup_tool().STAGING_SUFFIXES
