"""Tracking-server benchmark: MLflow's defaults against the server as charts/mlflow_setup runs it.

    .venv/bin/python -m benchmarks.tracking_server             # full run -> benchmarks/results/latest.md
    .venv/bin/python -m benchmarks.tracking_server --smoke     # seconds: proves it runs, figures meaningless
    .venv/bin/python -m benchmarks.tracking_server --ablation  # also each configuration choice undone

One run starts the local stack (`local.LocalStack`: MariaDB, Azurite and the chart-rendered tracking
server, on free loopback ports under a temporary directory), then runs each server variant in turn
against the same database and artifact store, on the same port:

- baseline: `mlflow server` with MLflow's defaults (4 uvicorn workers, job runner on, no credential
  cache) and the same functional settings: basic-auth, MariaDB, the Azurite artifact proxy, allowed hosts;
- project: the server exactly as the chart renders it (`python images/tracking-server/serve.py …`
  with the chart's arguments, environment and basic-auth configuration);
- with `--sign-in` (issue 13), project:sign-in: the chart's server in single sign-on mode
  (`tracking.auth.mode: oidc`, mlflow-oidc-auth), the local OpenID provider running, the load signing
  in as run Jobs do there: a projected ServiceAccount token as bearer, checked against cached keys.

For each: throughput and p50/p95 latency of single `log_metric`, `log_batch` (100 metrics),
`search_runs` and a 1 MiB artifact upload through the `mlflow-artifacts` proxy, at 1 client and at 8
concurrent connections; whole-process-tree memory (PSS, else RSS) and process count; start to ready.
The load generator is one asyncio process (aiohttp, one kept-alive connection per client).
Only 127.0.0.1 is contacted; every loop is bounded in time and count; everything started is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import configparser
import contextlib
import dataclasses
import io
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.common import log, write_report
from benchmarks.loadgen import OpResult, basic_auth_header, new_session, run_op
from benchmarks.procs import connections_per_process, tree_cpu_seconds, tree_memory_mib
from benchmarks.workload import SEARCH_RUNS, Workload, seed_search_experiment
from local.procs import Proc, free_ports, spawn, stop
from local.stack import LocalStack, StackConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "benchmarks" / "results" / "latest.md"
OPS = (
    ("log_metric", "log_metric"),
    ("log_batch", "log_batch (100 metrics)"),
    ("search_runs", "search_runs (one page of runs)"),
    ("upload_1mib", "artifact upload 1 MiB"),
)
CLIENTS = (1, 8)

# The server's environment that is not a performance setting: both variants get it. Everything
# else the chart sets is the project's tuning, which the baseline goes without.
FUNCTIONAL_ENV = {
    "PATH",
    "HOME",
    "MLFLOW_BACKEND_STORE_URI",
    "MLFLOW_AUTH_CONFIG_PATH",
    "MLFLOW_AUTH_ADMIN_USERNAME",
    "MLFLOW_AUTH_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SERVER_SECRET_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
}
# basic_auth.ini settings that only tune performance (MLflow's default: no credential cache).
AUTH_TUNING_KEYS = ("auth_cache_ttl_seconds", "auth_cache_max_size")


# ---------------------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    # basic_auth.ini content to use instead of the chart's (written under the run's directory).
    auth_ini: str | None = None
    # The load's credentials (headers), made when the variant starts. None: the run user's basic auth.
    headers: Callable[[], dict[str, str]] | None = None


def _strip_option(args: list[str], option: str) -> list[str]:
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == option:
            skip = True
            continue
        if arg.startswith(option + "="):
            continue
        out.append(arg)
    return out


def _set_option(args: list[str], option: str, value: str) -> list[str]:
    # One `--option=value` argument: unambiguous whatever the value looks like.
    return [*_strip_option(args, option), f"{option}={value}"]


def _without_auth_tuning(ini_text: str) -> str:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(ini_text)
    for key in AUTH_TUNING_KEYS:
        parser.remove_option("mlflow", key)
    buffer = io.StringIO()
    parser.write(buffer)
    return buffer.getvalue()


def _ini_set(ini_text: str, assignments: list[str]) -> str:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(ini_text)
    for assignment in assignments:
        key, _, value = assignment.partition("=")
        parser.set("mlflow", key.strip(), value.strip())
    buffer = io.StringIO()
    parser.write(buffer)
    return buffer.getvalue()


def build_variants(
    project_argv: list[str], env: dict[str, str], cwd: Path, names: list[str], ini_overrides: list[str]
) -> list[Variant]:
    """The chart's server (`python …/serve.py <args>`) and variants derived from it."""
    python, serve_py, *args = project_argv
    if not serve_py.endswith("serve.py"):
        raise SystemExit(f"benchmark: unexpected server command from the chart: {project_argv[:2]}")
    chart_ini = Path(env["MLFLOW_AUTH_CONFIG_PATH"]).read_text()
    if ini_overrides:
        chart_ini = _ini_set(chart_ini, ini_overrides)
    plain = [python, "-m", "mlflow", "server"]
    base_env = {k: v for k, v in env.items() if k in FUNCTIONAL_ENV}
    workers = _option_value(args, "--workers") or "(serve.py default)"
    catalogue = {
        "baseline": lambda: Variant(
            "baseline",
            "MLflow defaults: `mlflow server` (4 workers, job runner on, no credential cache)",
            [*plain, *_strip_option(args, "--workers")],
            base_env,
            cwd,
            _without_auth_tuning(chart_ini),
        ),
        "project": lambda: Variant(
            "project",
            f"as the chart renders it: serve.py, --workers {workers}",
            project_argv,
            env,
            cwd,
        ),
        "project:no-auth-cache": lambda: Variant(
            "project:no-auth-cache",
            "project without the basic-auth credential cache",
            project_argv,
            env,
            cwd,
            _without_auth_tuning(chart_ini),
        ),
        "project:plain-mlflow-server": lambda: Variant(
            "project:plain-mlflow-server",
            "project settings, started by `mlflow server` instead of serve.py",
            [*plain, *args],
            env,
            cwd,
        ),
        "project:no-run-experiment-cache": lambda: Variant(
            "project:no-run-experiment-cache",
            "project without serve.py's run -> experiment cache in permission checks",
            project_argv,
            {**env, "MLFLOW_AKS_RUN_EXPERIMENT_CACHE_SIZE": "0"},
            cwd,
        ),
        "project:no-request-user": lambda: Variant(
            "project:no-request-user",
            "project without serve.py's reuse of the authenticated user in a request's permission checks",
            project_argv,
            {**env, "MLFLOW_AKS_SHARE_REQUEST_USER": "false"},
            cwd,
        ),
        "project:job-runner-on": lambda: Variant(
            "project:job-runner-on",
            "project with MLflow's job runner on",
            project_argv,
            {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"},
            cwd,
        ),
        "project:2-workers": lambda: Variant(
            "project:2-workers",
            "project with --workers 2",
            [python, serve_py, *_set_option(args, "--workers", "2")],
            env,
            cwd,
        ),
        "project:2-workers-plain-mlflow-server": lambda: Variant(
            "project:2-workers-plain-mlflow-server",
            "project with --workers 2, started by `mlflow server` (no TCP_NODELAY, no SO_REUSEPORT)",
            [*plain, *_set_option(args, "--workers", "2")],
            env,
            cwd,
        ),
        "project:default-db-pool": lambda: Variant(
            "project:default-db-pool",
            "project with SQLAlchemy's default pool (5 + 10 overflow)",
            project_argv,
            {k: v for k, v in env.items() if not k.startswith("MLFLOW_SQLALCHEMYSTORE_")},
            cwd,
        ),
    }
    unknown = [n for n in names if n not in catalogue]
    if unknown:
        raise SystemExit(f"benchmark: unknown variant(s) {unknown}; known: {sorted(catalogue)}")
    variants = [catalogue[n]() for n in names]
    if ini_overrides:
        # Variants that keep the chart's basic_auth.ini get it with the overrides.
        variants = [
            v if v.auth_ini is not None else dataclasses.replace(v, auth_ini=chart_ini) for v in variants
        ]
    return variants


def _option_value(args: list[str], option: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


SIGN_IN = "project:sign-in"
# Issue 13: single sign-on's authenticated log_metric at 1 client, against MLflow's basic-auth defaults.
SIGN_IN_TARGET = 10.0


def sign_in_variant(stack: LocalStack, rundir: Path) -> Variant:
    """The chart's server with `tracking.auth.mode: oidc`, rendered for this stack; its init containers
    (the sign-in database's schema) run here, once. The local OpenID provider must be running."""
    saved = stack.config.sign_in
    stack.config.sign_in = True
    try:
        spec = stack.server_spec()
    finally:
        stack.config.sign_in = saved
    stack._write_files(spec)
    for init in spec.init:
        stack._run_init(init, rundir / "sign-in-init.log")
    [runs] = [p for p in json.loads(spec.main.env["AUTH_PROVIDERS"]) if p["type"] == "k8s"]

    def run_job_token() -> dict[str, str]:
        # What the kubelet mounts in a run Job (charts/mlflow_project, serviceAccountToken).
        token = stack.service_account_token(
            runs["namespace_allowlist"][0], "mlflow-run", runs["audience"], 3600
        )
        return {"Authorization": f"Bearer {token}"}

    return Variant(
        SIGN_IN,
        "as the chart renders it with tracking.auth.mode oidc (mlflow-oidc-auth); the load signs in with a "
        "run Job's ServiceAccount token",
        spec.main.argv,
        dict(spec.main.env),
        spec.main.cwd,
        headers=run_job_token,
    )


ABLATION = [
    "project:no-auth-cache",
    "project:no-run-experiment-cache",
    "project:no-request-user",
    "project:plain-mlflow-server",
    "project:job-runner-on",
    "project:default-db-pool",
    "project:2-workers",
    "project:2-workers-plain-mlflow-server",
]


# ---------------------------------------------------------------------------------------- measuring


@dataclass
class VariantResult:
    variant: Variant
    ready_s: float = float("nan")
    memory_mib: float = 0.0
    rss_mib: float = 0.0
    processes: int = 0
    measure: str = ""
    # How the 8 connections were spread over the server's processes, one sample per 8-client op.
    spread: str = ""
    # Connections MariaDB accepted while the load ran (pool churn shows here).
    db_connections: int = -1
    ops: dict[tuple[str, int], OpResult] = field(default_factory=dict)


@dataclass(frozen=True)
class Settings:
    duration: float
    max_requests: int
    warmup: int
    ready_timeout: float
    search_runs: int
    # Filled once the shared search experiment exists.
    search_experiment_id: str = ""


def _authorized_get(url: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - loopback http URL
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def wait_ready(base_url: str, headers: dict[str, str], proc: Proc, timeout: float) -> float:
    """Seconds until an authenticated API call (database + auth store) succeeds; polls every 50 ms."""
    t0 = time.monotonic()
    url = f"{base_url}/api/2.0/mlflow/experiments/search?max_results=1"
    while True:
        with contextlib.suppress(OSError):
            if _authorized_get(url, headers) == 200:
                return time.monotonic() - t0
        if not proc.alive():
            raise SystemExit(f"benchmark: the server exited before it was ready; see {proc.log}")
        if time.monotonic() - t0 > timeout:
            raise SystemExit(f"benchmark: the server was not ready after {timeout:.0f}s; see {proc.log}")
        time.sleep(0.05)


async def _measure(
    base_url: str, headers: dict[str, str], result: VariantResult, settings: Settings, root: int, port: int
) -> None:
    label = result.variant.name.replace(":", "-")
    workload = Workload(label, max(CLIENTS), settings.search_experiment_id, settings.search_runs)
    async with new_session(base_url, headers) as session:
        await workload.setup(session)
    for clients in CLIENTS:
        for op, _title in OPS:
            cpu_before = tree_cpu_seconds(root)
            if clients > 1:
                spread = asyncio.create_task(_spread(result, root, port, settings.duration / 2))
            result.ops[(op, clients)] = await run_op(
                op,
                base_url,
                headers,
                getattr(workload, op),
                clients,
                settings.duration,
                settings.max_requests,
                settings.warmup,
            )
            # Includes the warm-up requests' CPU: a small overestimate, the same for every variant.
            result.ops[(op, clients)].server_cpu_s = tree_cpu_seconds(root) - cpu_before
            _sample_memory(result, root)
            if clients > 1:
                await spread


def _db_connections(stack: LocalStack) -> int:
    """MariaDB's count of connections accepted since it started."""
    import pymysql

    connection = pymysql.connect(**stack.database_settings())
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW GLOBAL STATUS LIKE 'Connections'")
            return int(cursor.fetchone()[1])
    finally:
        connection.close()


def client_credentials(stack: LocalStack) -> tuple[str, str]:
    """The load logs in as run Jobs do: the chart's non-admin run user (so permission checks run)."""
    return stack.run_credentials()


async def _seed(stack: LocalStack, runs: int) -> str:
    async with new_session(stack.tracking_uri, basic_auth_header(*client_credentials(stack))) as session:
        return await seed_search_experiment(session, runs)


async def _spread(result: VariantResult, root: int, port: int, after: float) -> None:
    """Once the clients' connections are open: how many each server process holds, e.g. "4+4"."""
    await asyncio.sleep(after)
    sample = "+".join(str(n) for n in connections_per_process(root, port)) or "?"
    result.spread = f"{result.spread}, {sample}" if result.spread else sample


def _sample_memory(result: VariantResult, root: int) -> None:
    """Whole-tree memory right after each load phase; the run keeps the largest sample."""
    mib, count, measure = tree_memory_mib(root, result.measure or None)
    result.measure = measure
    result.memory_mib = max(result.memory_mib, mib)
    result.processes = max(result.processes, count)
    # RSS too (what a container's memory limit must cover; counts shared pages once per process).
    result.rss_mib = max(result.rss_mib, tree_memory_mib(root, "RSS")[0])


def start_variant(
    variant: Variant, stack: LocalStack, rundir: Path, ready_timeout: float
) -> tuple[Proc, float]:
    """Start `variant` on the stack's port (its basic_auth.ini written under `rundir`, 0600); return the
    process and the seconds it took to be ready. The caller stops it."""
    env = dict(variant.env)
    if variant.auth_ini is not None:
        ini = rundir / f"{variant.name.replace(':', '-')}.basic_auth.ini"
        fd = os.open(ini, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(variant.auth_ini)
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(ini)
    server_log = rundir / f"{variant.name.replace(':', '-')}.log"
    proc = spawn(variant.name, variant.argv, env=env, log=server_log, cwd=variant.cwd)
    try:
        return proc, wait_ready(stack.tracking_uri, load_headers(variant, stack), proc, ready_timeout)
    except BaseException:
        stop(proc, timeout=30)
        raise


def load_headers(variant: Variant, stack: LocalStack) -> dict[str, str]:
    return variant.headers() if variant.headers else basic_auth_header(*client_credentials(stack))


def run_variant(variant: Variant, stack: LocalStack, rundir: Path, settings: Settings, log) -> VariantResult:
    headers = load_headers(variant, stack)
    result = VariantResult(variant)
    log(f"[{variant.name}] starting: {variant.description}")
    proc, result.ready_s = start_variant(variant, stack, rundir, settings.ready_timeout)
    try:
        log(f"[{variant.name}] ready after {result.ready_s:.1f}s; measuring")
        _sample_memory(result, proc.pid)
        connections_before = _db_connections(stack)
        asyncio.run(
            _measure(stack.tracking_uri, headers, result, settings, proc.pid, stack.config.server_port)
        )
        # Less the one connection that reads the counter.
        result.db_connections = _db_connections(stack) - connections_before - 1
    finally:
        stop(proc, timeout=30)
    log(f"[{variant.name}] done: {result.memory_mib:.0f} MiB {result.measure}, {result.processes} processes")
    return result


# ---------------------------------------------------------------------------------------- reporting


def _ratio(project: float, baseline: float) -> str:
    if not baseline or baseline != baseline or project != project:
        return "n/a"
    return f"{project / baseline:.2f}x"


def _num(value: float, digits: int = 1) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def main_table(base: VariantResult, proj: VariantResult) -> list[str]:
    lines = [
        "| measure | clients | baseline | project | project / baseline |",
        "|---|---|---|---|---|",
    ]
    for clients in CLIENTS:
        for op, title in OPS:
            b, p = base.ops[(op, clients)], proj.ops[(op, clients)]
            lines.append(
                f"| {title}: throughput (req/s) | {clients} | {_num(b.throughput)} | {_num(p.throughput)} "
                f"| **{_ratio(p.throughput, b.throughput)}** |"
            )
            lines.append(
                f"| {title}: p50 / p95 latency (ms) | {clients} | {_num(b.p50)} / {_num(b.p95)} "
                f"| {_num(p.p50)} / {_num(p.p95)} | {_ratio(p.p50, b.p50)} / {_ratio(p.p95, b.p95)} |"
            )
            lines.append(
                f"| {title}: server CPU per request (ms) | {clients} | {_num(b.cpu_ms_per_request)} "
                f"| {_num(p.cpu_ms_per_request)} | {_ratio(p.cpu_ms_per_request, b.cpu_ms_per_request)} |"
            )
    lines += [
        f"| server memory, whole process tree ({base.measure}, MiB) | - | {base.memory_mib:.0f} "
        f"| {proj.memory_mib:.0f} | **{_ratio(proj.memory_mib, base.memory_mib)}** |",
        f"| server memory, whole process tree (RSS, MiB) | - | {base.rss_mib:.0f} "
        f"| {proj.rss_mib:.0f} | {_ratio(proj.rss_mib, base.rss_mib)} |",
        f"| 8 connections held per server process (each 8-connection load) | 8 | {base.spread} "
        f"| {proj.spread} | - |",
        f"| database connections opened during the load | - | {base.db_connections} "
        f"| {proj.db_connections} | {_ratio(proj.db_connections, base.db_connections)} |",
        f"| server processes | - | {base.processes} | {proj.processes} "
        f"| {_ratio(proj.processes, base.processes)} |",
        f"| start to ready (s) | - | {base.ready_s:.1f} | {proj.ready_s:.1f} "
        f"| {_ratio(proj.ready_s, base.ready_s)} |",
    ]
    errors = [
        f"{r.variant.name} {op}x{c}: {res.errors}"
        for r in (base, proj)
        for (op, c), res in r.ops.items()
        if res.errors
    ]
    lines.append("")
    lines.append("Failed requests: " + ("; ".join(errors) if errors else "none."))
    return lines


def targets(base: VariantResult, proj: VariantResult) -> list[tuple[str, bool, str]]:
    """Issue 5's targets, each with whether this run met it."""

    def thr(r: VariantResult, op: str, c: int) -> float:
        return r.ops[(op, c)].throughput

    checks = []
    for op, need in (("log_metric", 4.0), ("log_batch", 2.5)):
        ratio = thr(proj, op, 1) / thr(base, op, 1) if thr(base, op, 1) else float("nan")
        checks.append((f"1 client {op} ≥ {need}x baseline", ratio >= need, f"{ratio:.2f}x"))
    p95 = proj.ops[("log_metric", 1)].p95
    checks.append(("1 client log_metric p95 ≤ 20 ms", p95 <= 20.0, f"{p95:.1f} ms"))
    for op in ("log_metric", "log_batch"):
        ratio = thr(proj, op, 8) / thr(base, op, 8) if thr(base, op, 8) else float("nan")
        checks.append((f"8 connections {op} ≥ 1.5x baseline", ratio >= 1.5, f"{ratio:.2f}x"))
    share = proj.memory_mib / base.memory_mib if base.memory_mib else float("nan")
    checks.append(("whole-tree memory ≤ 30% of baseline", share <= 0.30, f"{share * 100:.0f}%"))
    return checks


def ablation_table(proj: VariantResult, others: list[VariantResult]) -> list[str]:
    def row(r: VariantResult) -> str:
        cells = []
        for op, c in (("log_metric", 1), ("log_batch", 1), ("log_metric", 8), ("log_batch", 8)):
            res = r.ops[(op, c)]
            cells.append(_num(res.throughput))
        lm = r.ops[("log_metric", 1)]
        return (
            f"| {r.variant.name} | {r.variant.description} | {' | '.join(cells)} | {_num(lm.p95)} "
            f"| {_num(lm.cpu_ms_per_request)} | {r.memory_mib:.0f} | {r.processes} | {r.ready_s:.1f} "
            f"| {r.db_connections} | {r.spread} |"
        )

    lines = [
        "| variant | what differs | log_metric x1 (req/s) | log_batch x1 | log_metric x8 | log_batch x8 "
        "| log_metric x1 p95 (ms) | log_metric x1 CPU/request (ms) | memory (MiB) | processes | ready (s) "
        "| DB connections opened | 8 connections per process |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        row(proj),
    ]
    lines += [row(r) for r in others]
    return lines


def _version(module: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return "?"


def machine_info() -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    mariadb = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        binary = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
        mariadb = out.split("Ver", 1)[1].split()[0] if "Ver" in out else out.strip()
    azurite = "?"
    with contextlib.suppress(OSError, ValueError, KeyError):
        azurite = json.loads((REPO_ROOT / "node_modules" / "azurite" / "package.json").read_text())["version"]
    return {
        "CPU": f"{cpu}, {os.cpu_count()} logical cores",
        "RAM": mem,
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "versions": ", ".join(
            [
                *(f"{name} {_version(name)}" for name in ("mlflow", "uvicorn", "SQLAlchemy", "PyMySQL")),
                f"MariaDB {mariadb}",
                f"Azurite {azurite}",
                f"aiohttp {_version('aiohttp')}",
            ]
        ),
    }


def render_report(
    results: list[VariantResult],
    settings: Settings,
    info: dict[str, str],
    load: tuple[str, str],
    loadgen_cpu_s: float,
    wall_s: float,
    smoke: bool,
) -> str:
    base, proj = results[0], results[1]
    out = ["# Tracking-server benchmark", ""]
    if smoke:
        out += ["**Smoke run**: durations too short for any figure below to mean anything.", ""]
    out += [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC with `python -m benchmarks.tracking_server"
        f"{' --smoke' if smoke else ''}` — {settings.duration:g} s (at most {settings.max_requests} "
        f"requests) per measurement, after {settings.warmup} unmeasured warm-up requests per connection.",
        "",
        f"- baseline: {base.variant.description}",
        f"- project: {proj.variant.description}",
        "- same MariaDB, Azurite and basic-auth databases; one variant runs at a time, on the same port",
        f"- load generator: one asyncio process, aiohttp, one kept-alive connection per client "
        f"(CPU used by it over the whole run: {loadgen_cpu_s:.0f} s of {wall_s:.0f} s wall)",
        f"- memory: {base.measure} summed over the server's whole process tree, largest sample "
        "(taken after start-up and after each load phase)",
        "",
        "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + ".",
        f"Load average (1/5/15 min) before: {load[0]}; after: {load[1]}.",
        "",
        *main_table(base, proj),
        "",
        "Targets (issue 5):",
        "",
    ]
    for name, met, value in targets(base, proj):
        out.append(f"- {name}: {value} — {'met' if met else 'NOT met'}")
    sign_in = next((r for r in results if r.variant.name == SIGN_IN), None)
    if sign_in is not None:
        b, p = base.ops[("log_metric", 1)], sign_in.ops[("log_metric", 1)]
        ratio = p.throughput / b.throughput if b.throughput else float("nan")
        out += [
            "",
            f"Single sign-on (issue 13): {sign_in.variant.description}.",
            "",
            "| log_metric, 1 client | baseline (basic-auth defaults) | sign-in | sign-in / baseline |",
            "|---|---|---|---|",
            f"| throughput (req/s) | {_num(b.throughput)} | {_num(p.throughput)} "
            f"| **{_ratio(p.throughput, b.throughput)}** |",
            f"| p50 / p95 latency (ms) | {_num(b.p50)} / {_num(b.p95)} | {_num(p.p50)} / {_num(p.p95)} | - |",
            f"| server CPU per request (ms) | {_num(b.cpu_ms_per_request)} | {_num(p.cpu_ms_per_request)} "
            f"| {_ratio(p.cpu_ms_per_request, b.cpu_ms_per_request)} |",
            "",
            f"- sign-in 1 client log_metric ≥ {SIGN_IN_TARGET:g}x baseline: {ratio:.2f}x — "
            f"{'met' if ratio >= SIGN_IN_TARGET else 'NOT met'}",
            "",
            "Failed requests (sign-in): "
            + (
                "; ".join(f"{op}x{c}: {r.errors}" for (op, c), r in sign_in.ops.items() if r.errors)
                or "none."
            ),
        ]
    if len(results) > 2:
        out += [
            "",
            "Each configuration choice undone, one at a time (same run, same measurements); "
            "throughput in req/s, x1 = 1 client, x8 = 8 connections:",
            "",
            *ablation_table(proj, results[2:]),
        ]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------- main


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tracking_server", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--smoke", action="store_true", help="tiny durations: proves the benchmark runs")
    parser.add_argument("--duration", type=float, help="seconds per measurement (default 10; smoke 0.3)")
    parser.add_argument("--max-requests", type=int, help="request cap per measurement (default 50000)")
    parser.add_argument("--ablation", action="store_true", help="also run each choice undone (variants)")
    parser.add_argument(
        "--sign-in", action="store_true", help="also the single sign-on server (local OpenID provider)"
    )
    parser.add_argument(
        "--variants", help="comma-separated variants after baseline and project (see --ablation)", default=""
    )
    parser.add_argument(
        "--output", type=Path, help=f"report file (default {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})"
    )
    parser.add_argument(
        "--values", type=json.loads, default={}, help="JSON chart values merged over the local stack's"
    )
    parser.add_argument(
        "--auth-ini-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a basic_auth.ini key for the project and its variants (try it before the chart has it)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="stack directory (default: a new temporary one, removed)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the stack directory (logs) afterwards")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = Settings(
        duration=args.duration or (0.3 if args.smoke else 10.0),
        max_requests=args.max_requests or (8 if args.smoke else 50_000),
        warmup=0 if args.smoke else 3,
        ready_timeout=300.0,
        search_runs=10 if args.smoke else SEARCH_RUNS,
    )
    output = args.output or (DEFAULT_OUTPUT.with_name("smoke.md.tmp") if args.smoke else DEFAULT_OUTPUT)
    extra = [v for v in args.variants.split(",") if v] + (ABLATION if args.ablation else [])
    names = ["baseline", "project", *dict.fromkeys(extra)]

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mlflow-aks-bench-"))
    # The OpenID provider's port too (--sign-in): two benchmarks may run at once (test_benchmark_smoke).
    server_port, mysql_port, azurite_port, oidc_port = free_ports(4)
    config = StackConfig(
        workdir=workdir,
        server_port=server_port,
        mysql_port=mysql_port,
        azurite_port=azurite_port,
        oidc_port=oidc_port,
        values=args.values,
    )
    stack = LocalStack(config)
    load_before = _loadavg()
    t0 = time.monotonic()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    results: list[VariantResult] = []
    try:
        log(f"starting the local stack under {workdir} (MariaDB, Azurite, the chart's server)")
        stack.start()
        # The stack's own server ran the chart's init containers (schema migrations). It seeds the
        # experiment that every variant searches; then each variant is started on the same port
        # by this benchmark, which times it.
        settings = dataclasses.replace(
            settings, search_experiment_id=asyncio.run(_seed(stack, settings.search_runs))
        )
        stack.stop_server()
        spec = stack.server_spec()
        rundir = workdir / "benchmark"
        rundir.mkdir(parents=True, exist_ok=True, mode=0o700)
        variants = build_variants(
            spec.main.argv, dict(spec.main.env), spec.main.cwd, names, args.auth_ini_set
        )
        if args.sign_in:
            log("starting the local OpenID provider for the sign-in server")
            stack.start_oidc()
            variants.insert(2, sign_in_variant(stack, rundir))
        for variant in variants:
            results.append(run_variant(variant, stack, rundir, settings, log))
    finally:
        with contextlib.suppress(Exception):
            stack.stop()
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    loadgen_cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    report = render_report(
        results,
        settings,
        machine_info(),
        (load_before, _loadavg()),
        loadgen_cpu,
        time.monotonic() - t0,
        args.smoke,
    )
    write_report(output, report)
    log(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
