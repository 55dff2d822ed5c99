"""The bundled MySQL under load and in the cluster (issue 18, items 6 and 7), as the charts render it:
`max_connections` covers the worst case of a rollout, the probes ask the server itself, the passwords are
files, and the pod reaches DNS only.

Each check reads the rendered objects (the Deployment's env and args, the pods' labels, the mounted
ConfigMap) and computes what MySQL must allow on its own, so a change on either side that breaks the
relation fails here.
"""

from __future__ import annotations

import configparser
import json
import math
import subprocess
from pathlib import Path

import pytest

from components import chart_values
from components.chart_values import setup_values
from local import chart as local_chart
from local import free_port, mariadb
from local.chart import deep_merge
from local.stack import LocalStack, StackConfig
from tests import chart_render as cr
from tests.test_charts_sign_in import SIGN_IN

# MLflow's own pool defaults (mlflow.store.db.utils), used when the chart sets none.
MLFLOW_POOL_SIZE, MLFLOW_MAX_OVERFLOW = 5, 10
SCHEMA = json.loads((cr.SETUP_CHART / "values.schema.json").read_text())
REPLICAS = SCHEMA["properties"]["tracking"]["properties"]["replicaCount"]


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("database-limits")


@pytest.fixture(scope="module")
def private_setup(helm_bin, tmp_dir) -> list[dict]:
    return cr.render(
        helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, setup_values(cr.SETUP_CONTEXTS["private"]), tmp_dir
    )


def mysql_pod(objects: list[dict]) -> dict:
    return cr.one(objects, "StatefulSet", chart_values.MYSQL_FULLNAME)["spec"]["template"]


def mysql_container(objects: list[dict]) -> dict:
    [container] = mysql_pod(objects)["spec"]["containers"]
    return container


# --- max_connections --------------------------------------------------------------------------------


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container["env"]}


def _cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def worst_case_connections(objects: list[dict]) -> int:
    """What the tracking servers can hold at once during a rollout, from the rendered Deployment only."""
    # The tracking server, whatever the release's name: the Deployment with a container `mlflow`.
    [deployment] = [
        d
        for d in cr.of_kind(objects, "Deployment")
        if any(c["name"] == "mlflow" for c in d["spec"]["template"]["spec"]["containers"])
    ]
    # Running (replicas + surge), and every old pod still draining: terminating pods keep their pools until
    # they exit (terminationGracePeriodSeconds), and a Deployment does not count them against its surge.
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 0
    replicas = deployment["spec"]["replicas"]
    pods = replicas + deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] + replicas
    [server] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "mlflow"]
    args = server["args"]
    if "--workers" in args:
        workers = int(args[args.index("--workers") + 1])
    else:  # serve.py: one per whole CPU of the limit
        workers = max(1, math.floor(_cores(server["resources"]["limits"]["cpu"])))
    env = _env(server)

    def pool(size: str, overflow: str, default_size: int, default_overflow: int) -> int:
        size_value = int(env[size]["value"]) if size in env else default_size
        overflow_value = int(env[overflow]["value"]) if overflow in env else default_overflow
        return size_value + overflow_value

    mlflow_pool = pool(
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", MLFLOW_POOL_SIZE,
        MLFLOW_MAX_OVERFLOW,
    )  # fmt: skip
    per_process = 0
    assert "MLFLOW_BACKEND_STORE_URI" in env
    per_process += 2 * mlflow_pool  # the tracking store and the model registry (same URI, own engines)
    if "MLFLOW_AUTH_CONFIG_PATH" in env:
        per_process += mlflow_pool  # the basic-auth user store (basic_auth.ini's database_uri)
    if "OIDC_USERS_DB_URI" in env:  # the sign-in plugin's user store, with its own pool settings
        per_process += pool("OIDC_DB_POOL_SIZE", "OIDC_DB_POOL_MAX_OVERFLOW", MLFLOW_POOL_SIZE, 10)
    return pods * workers * per_process + job_runner_connections(objects)


def _module_constant(module: str, name: str):
    """A module-level literal of MLflow's, read from its source (importing the module takes seconds)."""
    import ast
    import importlib.util

    root = Path(importlib.util.find_spec("mlflow").submodule_search_locations[0]).parent
    path = root.joinpath(*module.split("."))
    source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(source.read_text())
    [value] = [
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]
    ]
    return value


def job_runner_connections(objects: list[dict]) -> int:
    """What the jobs pod can hold at once, from its rendered env and MLflow's job definitions: the runner
    and the periodic-tasks consumer, plus every job process MLflow lets run at once (each job function's
    `max_workers`), each with three engines (tracking store, model registry, job store)."""
    runners = [
        d
        for d in cr.of_kind(objects, "Deployment")
        if [c["name"] for c in d["spec"]["template"]["spec"]["containers"]] == ["jobs"]
    ]
    if not runners:
        return 0
    [runner] = runners
    assert runner["spec"]["replicas"] == 1 and runner["spec"]["strategy"]["type"] == "Recreate"
    env = _env(runner["spec"]["template"]["spec"]["containers"][0])
    job_names = _module_constant("mlflow.server.jobs", "_ALLOWED_JOB_NAME_LIST")
    optimize_workers = _module_constant("mlflow.genai.optimize.job", "_DEFAULT_OPTIMIZATION_JOB_MAX_WORKERS")

    judge = int(env["MLFLOW_SERVER_JUDGE_INVOKE_MAX_WORKERS"]["value"])
    online = int(env["MLFLOW_SERVER_ONLINE_SCORING_MAX_WORKERS"]["value"])
    per_kind = {
        "invoke_scorer": judge,
        "invoke_genai_evaluate": judge,
        "invoke_issue_detection": judge,
        "run_online_trace_scorer": online,
        "run_online_session_scorer": online,
        "optimize_prompts": optimize_workers,
    }
    assert set(per_kind) == set(job_names), "a new kind of MLflow job: count its processes"
    processes = 2 + sum(per_kind.values())
    pool = int(env["MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"]["value"]) + int(
        env["MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW"]["value"]
    )
    return processes * 3 * pool


def mysql_max_connections(objects: list[dict]) -> int:
    """max_connections as the MySQL container gets it: the option files mounted in /etc/mysql/conf.d,
    else its command-line flag, else MySQL's default."""
    pod = mysql_pod(objects)["spec"]
    container = mysql_container(objects)
    flags = [a for a in container["args"] if a.startswith("--max-connections=")]
    if flags:
        return int(flags[-1].split("=", 1)[1])
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/etc/mysql/conf.d"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    options = cr.one(objects, "ConfigMap", volume["configMap"]["name"])["data"]
    found = []
    for name, text in options.items():
        assert name.endswith(".cnf"), name  # !includedir reads *.cnf only
        parser = configparser.ConfigParser(comment_prefixes=("#", ";"), allow_no_value=True)
        parser.read_string(text)
        if parser.has_option("mysqld", "max_connections"):
            found.append(parser.getint("mysqld", "max_connections"))
    return found[-1] if found else 151


def _case_values(replicas: int, case: int) -> dict:
    """Every replica count, with the workers set (1, several) or left to serve.py (the CPU limit)."""
    tracking: dict = {"replicaCount": replicas}
    if case == 1:
        tracking["workers"] = None
        tracking["resources"] = {"limits": {"cpu": "2500m", "memory": "2Gi"}, "requests": {"cpu": "1"}}
    elif case == 2:
        tracking["workers"] = 3
        tracking["databasePool"] = {"size": 10, "maxOverflow": 20, "otherConnections": 5}
    return {"tracking": tracking}


@pytest.mark.parametrize("replicas", range(REPLICAS["minimum"], REPLICAS["maximum"] + 1))
def test_max_connections_covers_a_rollout_for_every_replica_count(helm_bin, tmp_dir, replicas):
    values = deep_merge(setup_values(cr.SETUP_CONTEXTS["private"]), _case_values(replicas, replicas % 3))
    objects = cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, tmp_dir)
    need = worst_case_connections(objects)
    assert mysql_max_connections(objects) >= need
    # Exactly the documented headroom above it: not a number that merely happens to be large.
    assert mysql_max_connections(objects) - need == values["tracking"].get("databasePool", {}).get(
        "otherConnections", 20
    )


def test_max_connections_counts_the_sign_in_store(helm_bin, tmp_dir):
    values = deep_merge(
        deep_merge(setup_values(cr.SETUP_CONTEXTS["private"]), SIGN_IN),
        {"tracking": {"replicaCount": REPLICAS["maximum"], "workers": 2}},
    )
    objects = cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, tmp_dir)
    deployment = cr.one(objects, "Deployment", chart_values.TRACKING_SERVICE)
    assert "OIDC_USERS_DB_URI" in _env(deployment["spec"]["template"]["spec"]["containers"][0])
    assert mysql_max_connections(objects) >= worst_case_connections(objects)


def test_workers_left_to_an_unlimited_cpu_are_refused(helm_bin, tmp_dir):
    """serve.py would start one worker per CPU of the node: no bound on connections, so no render."""
    values = deep_merge(
        setup_values(cr.SETUP_CONTEXTS["private"]),
        {"tracking": {"workers": None, "resources": {"limits": {"cpu": None}}}},  # null: Helm drops the key
    )
    result = cr.template(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, tmp_dir)
    assert result.returncode != 0 and "tracking.resources.limits.cpu" in result.stderr


def test_mysql_alone_takes_its_own_limit(helm_bin, tmp_dir):
    """charts/mysql installed by hand (no parent to compute the limit): `maxConnections` as a flag."""
    values = {
        "auth": {"rootPassword": "r", "password": "p", "username": "mlflow", "database": "mlflow"},
        "maxConnections": 321,
    }
    objects = cr.render(helm_bin, cr.MYSQL_CHART, "mlflow", values, tmp_dir)
    assert mysql_max_connections(objects) == 321
    volumes = mysql_pod(objects)["spec"]["volumes"]
    assert not [v for v in volumes if "configMap" in v and "options" in v["name"]]


class _Started(Exception):
    pass


def test_the_local_stack_gives_mariadb_the_charts_limit(helm_bin, tmp_path, monkeypatch):
    """The local stack's MariaDB gets the max_connections the chart computes for the local server (here
    with 3 workers, as a benchmark runs it), not a number of its own."""
    config = StackConfig(
        workdir=tmp_path / "ws", mysql_port=free_port(), helm=helm_bin, values={"tracking": {"workers": 3}}
    )
    stack = LocalStack(config)
    started: dict = {}

    def start(paths, port, extra_args=None, *, max_connections=None, buffer_pool_mib=None):
        started.update(port=port, max_connections=max_connections, buffer_pool_mib=buffer_pool_mib)
        raise _Started

    monkeypatch.setattr(mariadb, "initialise", lambda paths: None)
    monkeypatch.setattr(mariadb, "start", start)
    with pytest.raises(_Started):
        stack._start_mariadb()
    local_server = local_chart.render(config.repo_root, stack.chart_values(), helm_bin)
    assert started["port"] == config.mysql_port
    # 3 workers: more than the 200 it used to have, so a fixed number would fail here.
    assert started["max_connections"] >= worst_case_connections(local_server) > 200
    # The buffer pool the cluster's MySQL gets (issue 20): the experiment page's tables in memory.
    assert started["buffer_pool_mib"] == mysql_buffer_pool_mib(mysql_container(_bundled(helm_bin, tmp_path)))


def _bundled(helm_bin: str, tmp_dir: Path) -> list[dict]:
    values = setup_values(cr.SETUP_CONTEXTS["private"])
    return cr.render(helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, values, tmp_dir)


def _mebibytes(quantity: str) -> float:
    units = {"Mi": 1, "Gi": 1024, "M": 10**6 / 2**20, "G": 10**9 / 2**20}
    for suffix in sorted(units, key=len, reverse=True):
        if quantity.endswith(suffix):
            return float(quantity.removesuffix(suffix)) * units[suffix]
    return float(quantity) / 2**20


def mysql_buffer_pool_mib(container: dict) -> int:
    """innodb_buffer_pool_size as the MySQL container's flag sets it, in MiB (MySQL's 128 without it)."""
    flags = [a for a in container["args"] if a.startswith("--innodb-buffer-pool-size=")]
    return int(flags[-1].split("=", 1)[1].removesuffix("M")) if flags else 128


@pytest.mark.parametrize("chart", ["mlflow_setup", "mysql alone"])
def test_the_buffer_pool_holds_the_experiment_page_and_fits_the_container(helm_bin, tmp_dir, chart):
    """MySQL keeps the tables the experiment page reads in memory: 555 MiB at 100,000 runs (params and
    latest metrics, docs/performance.md), more than MySQL's default 128 MiB pool; and the pool leaves 40%
    of the memory limit to MySQL itself and its connections, and fits the memory it requests."""
    if chart == "mysql alone":
        values = {"auth": {"rootPassword": "r", "password": "p", "username": "mlflow", "database": "mlflow"}}
        objects = cr.render(helm_bin, cr.MYSQL_CHART, "mlflow", values, tmp_dir)
    else:
        objects = _bundled(helm_bin, tmp_dir)
    container = mysql_container(objects)
    pool = mysql_buffer_pool_mib(container)
    assert pool >= 555 * 1.5
    assert pool <= 0.6 * _mebibytes(container["resources"]["limits"]["memory"])
    assert pool <= _mebibytes(container["resources"]["requests"]["memory"])


def test_a_changed_connection_limit_restarts_mysql(setup_renders_by_name):
    """MySQL reads its option files only at start: the program's values change its pod template whenever
    the limit changes (here with trackingReplicas), and leave it alone when it does not (here exposure)."""
    renders = {
        name: setup_renders_by_name(name) for name in ("private", "private-one-replica", "public-one-range")
    }
    limits = {name: mysql_max_connections(objects) for name, objects in renders.items()}
    templates = {name: mysql_pod(objects) for name, objects in renders.items()}
    for a in renders:
        for b in renders:
            assert (limits[a] != limits[b]) == (templates[a] != templates[b]), (a, b)
    assert limits["private"] != limits["private-one-replica"]


# --- probes -----------------------------------------------------------------------------------------


def test_mysql_liveness_and_readiness_ask_the_server(private_setup):
    """mysqladmin ping answers only when mysqld handles a connection (exit 0 even on access denied, so
    no password: https://dev.mysql.com/doc/refman/8.4/en/mysqladmin.html); a bare TCP check passes on a
    hung server whose port is still open."""
    container = mysql_container(private_setup)
    for probe in ("livenessProbe", "readinessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[0] == "mysqladmin" and command[-1] == "ping", probe
        assert not [a for a in command if a.startswith(("-p", "--password", "-u", "--user"))], probe
        assert container[probe]["timeoutSeconds"] > int(
            next(a for a in command if a.startswith("--connect-timeout=")).split("=")[1]
        )
    # Liveness over the server's socket, readiness over TCP as clients connect.
    assert "--protocol=SOCKET" in container["livenessProbe"]["exec"]["command"]
    assert "--protocol=TCP" in container["readinessProbe"]["exec"]["command"]
    socket = next(a for a in container["livenessProbe"]["exec"]["command"] if a.startswith("--socket="))
    run_dir = str(Path(socket.split("=", 1)[1]).parent)
    assert run_dir in {m["mountPath"] for m in container["volumeMounts"]}
    # Startup still waits for the TCP port: the entrypoint's temporary first-start server has a socket
    # but no network, and must not count as up.
    assert container["startupProbe"]["tcpSocket"]["port"] == "mysql"


# --- passwords as files -----------------------------------------------------------------------------


def test_mysql_reads_its_passwords_from_files(private_setup):
    ctx = cr.SETUP_CONTEXTS["private"]
    pod = mysql_pod(private_setup)["spec"]
    container = mysql_container(private_setup)
    env = _env(container)
    # No password in the environment, from a Secret or otherwise.
    assert not [e for e in container["env"] if "valueFrom" in e]
    assert {"MYSQL_ROOT_PASSWORD", "MYSQL_PASSWORD"}.isdisjoint(env)
    for value in (e.get("value", "") for e in container["env"]):
        assert ctx.mysql_password not in value and ctx.mysql_root_password not in value
    secret = cr.secret_data(cr.one(private_setup, "Secret", chart_values.MYSQL_FULLNAME))
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for variable, password in (
        ("MYSQL_ROOT_PASSWORD_FILE", ctx.mysql_root_password),
        ("MYSQL_PASSWORD_FILE", ctx.mysql_password),
    ):
        path = Path(env[variable]["value"])
        mount = mounts[str(path.parent)]
        assert mount["readOnly"] is True
        source = volumes[mount["name"]]["secret"]
        assert source["secretName"] == chart_values.MYSQL_FULLNAME
        [item] = [i for i in source["items"] if i["path"] == path.name]
        assert secret[item["key"]] == password
        # Readable by the server's group (fsGroup) only: 0440.
        assert source["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


# The image's entrypoint as far as passwords go (docker-library/mysql docker-entrypoint.sh, file_env):
# each `<VAR>_FILE` read into an exported `<VAR>`, then `exec "$@"`, which runs `mysqld` from PATH.
STAND_IN_ENTRYPOINT = """#!/bin/sh
for var in MYSQL_ROOT_PASSWORD MYSQL_PASSWORD; do
  eval "file=\\${${var}_FILE:-}"
  if [ -n "$file" ]; then export "$var=$(cat "$file")"; echo "entrypoint read $var"; fi
  unset "${var}_FILE"
done
exec "$@"
"""
# The server: what it finds in its environment.
STAND_IN_MYSQLD = "#!/bin/sh\nenv | grep '^MYSQL_' | sort\n"


@pytest.mark.parametrize("existing", [True, False], ids=["existing-data", "empty-volume"])
def test_the_server_never_holds_a_password_in_its_environment(private_setup, tmp_path, existing):
    """On an empty volume the entrypoint reads the `*_FILE` passwords to create the accounts, and the
    `mysqld` the command puts first on PATH drops them before the server starts; on existing data
    align.sql sets the passwords and the entrypoint reads none. Either way the server's environment holds
    no password. (A stand-in entrypoint and server: the real image is not run here.)"""
    ctx = cr.SETUP_CONTEXTS["private"]
    container = mysql_container(private_setup)
    image_bin = tmp_path / "image-bin"
    image_bin.mkdir()
    for name, text in (("docker-entrypoint.sh", STAND_IN_ENTRYPOINT), ("mysqld", STAND_IN_MYSQLD)):
        (image_bin / name).write_text(text)
        (image_bin / name).chmod(0o755)
    # Places translated to this machine: the data directory, the mounted volumes.
    datadir = tmp_path / "data"
    if existing:
        (datadir / "mysql").mkdir(parents=True)
    mounts = {m["mountPath"]: tmp_path / m["name"] for m in container["volumeMounts"]}
    for path in mounts.values():
        path.mkdir(exist_ok=True)
    script = container["command"][2]
    for mount_path, local in mounts.items():
        script = script.replace(mount_path, str(local))
    env = {e["name"]: e["value"] for e in container["env"]}
    for variable, password in (
        ("MYSQL_ROOT_PASSWORD_FILE", ctx.mysql_root_password),
        ("MYSQL_PASSWORD_FILE", ctx.mysql_password),
    ):
        path = Path(env[variable])
        local = mounts[str(path.parent)] / path.name
        local.write_text(password)
        env[variable] = str(local)
    args = [a if not a.startswith("--datadir=") else f"--datadir={datadir}" for a in container["args"]]
    done = subprocess.run(
        [*container["command"][:2], script, *container["command"][3:], *args],
        env={"PATH": f"{image_bin}:/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    read = {line.split()[-1] for line in lines if line.startswith("entrypoint read ")}
    assert read == (set() if existing else {"MYSQL_ROOT_PASSWORD", "MYSQL_PASSWORD"})
    server_env = dict(line.split("=", 1) for line in lines if line.startswith("MYSQL_"))
    assert server_env, done.stdout  # the server ran, with the rest of its environment
    assert not [k for k in server_env if "PASSWORD" in k], server_env
    assert ctx.mysql_password not in done.stdout and ctx.mysql_root_password not in done.stdout


# --- network ----------------------------------------------------------------------------------------


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) applied to `labels`."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def policies_selecting(objects: list[dict], namespace: str, labels: dict[str, str]) -> list[dict]:
    return [
        p
        for p in cr.of_kind(objects, "NetworkPolicy")
        if p["metadata"]["namespace"] == namespace and selects(p["spec"]["podSelector"], labels)
    ]


def pod_labels(objects: list[dict]) -> list[tuple[str, dict[str, str]]]:
    found = []
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "Job"):
            found.append((obj["metadata"]["name"], obj["spec"]["template"]["metadata"]["labels"]))
        elif obj["kind"] == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
            found.append((obj["metadata"]["name"], template["metadata"]["labels"]))
    return found


DNS_PEER = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
}


@pytest.mark.parametrize("name", ["private", "public-one-range"])
def test_mysql_egress_is_dns_only(setup_renders_by_name, name):
    """Every NetworkPolicy that selects the MySQL pod, together (policies add up), lets it reach the
    cluster DNS and nothing else; each of them restricts egress, so nothing is left open by default."""
    objects = setup_renders_by_name(name)
    labels = mysql_pod(objects)["metadata"]["labels"]
    policies = policies_selecting(objects, cr.NAMESPACE, labels)
    egress = [p for p in policies if "Egress" in p["spec"]["policyTypes"]]
    assert egress, "no policy restricts MySQL's egress"
    for policy in egress:
        for rule in policy["spec"].get("egress") or []:
            assert rule["to"] == [DNS_PEER], policy["metadata"]["name"]
            assert {(p["protocol"], p["port"]) for p in rule["ports"]} == {("UDP", 53), ("TCP", 53)}


@pytest.mark.parametrize("name", ["private", "public-one-range"])
def test_mysql_admits_the_pods_that_use_it_and_no_other(setup_renders_by_name, name):
    """The tracking server (its migrate init container included) and every maintenance Job (backup, gc,
    binary-log shipping, restores) reach MySQL's port; the helm test pod and run Jobs do not."""
    objects = setup_renders_by_name(name)
    labels = mysql_pod(objects)["metadata"]["labels"]
    ingress = [
        rule
        for p in policies_selecting(objects, cr.NAMESPACE, labels)
        if "Ingress" in p["spec"]["policyTypes"]
        for rule in p["spec"].get("ingress") or []
    ]

    def admitted(pod: dict[str, str]) -> bool:
        return any(
            "namespaceSelector" not in peer and selects(peer["podSelector"], pod)
            for rule in ingress
            if {(p["protocol"], p["port"]) for p in rule["ports"]} == {("TCP", 3306)}
            for peer in rule["from"]
        )

    clients = [(n, lbl) for n, lbl in pod_labels(objects) if n != chart_values.MYSQL_FULLNAME]
    assert any("binlogs" in n for n, _ in clients)  # the binary-log shipping Jobs are among them
    for job_name, pod in clients:
        assert admitted(pod), job_name
    assert not admitted(cr.one(objects, "Pod")["metadata"]["labels"])  # the helm test
    assert not admitted({"app.kubernetes.io/name": "mlflow-project", "app.kubernetes.io/component": "run"})


@pytest.fixture(scope="module")
def setup_renders_by_name(helm_bin, tmp_dir):
    cache: dict[str, list[dict]] = {}

    def get(name: str) -> list[dict]:
        if name not in cache:
            cache[name] = cr.render(
                helm_bin, cr.SETUP_CHART, cr.SETUP_RELEASE, setup_values(cr.SETUP_CONTEXTS[name]), tmp_dir
            )
        return cache[name]

    return get
