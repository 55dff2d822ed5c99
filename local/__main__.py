"""`python -m local up|down|status|credentials|token|run-project`: the local stack from the command line.

Ports and modes (--https, --sign-in) given to `up` are remembered in the working directory's state, so
the other commands find the running stack without repeating them, and a later `up` keeps them until
--no-https or --no-sign-in turns a mode off.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from local.procs import StackError
from local.stack import (
    STATE_PORT_KEYS,
    LocalStack,
    RunResult,
    StackConfig,
    missing_prerequisites,
    parse_params,
)

#: Every port the stack binds: a StackConfig field and an `up` option each, remembered in the state.
PORT_FIELDS = tuple(STATE_PORT_KEYS)


def _config(args: argparse.Namespace) -> StackConfig:
    config = StackConfig(workdir=Path(args.workdir))
    try:
        state = json.loads((Path(args.workdir) / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        state = {}
    # A mode's ports too while it is off: `up --https` again serves where it did before.
    remembered = {**state.get("up_ports", {}), **state.get("ports", {}), "metrics": state.get("metrics_port")}
    for name in PORT_FIELDS:
        given = getattr(args, name, None)
        key = STATE_PORT_KEYS[name]
        setattr(config, name, given or remembered.get(key) or getattr(config, name))
    # Each mode stays as the last `up` left it (its ports are in the state) until --no-<mode> turns it off.
    https, sign_in = getattr(args, "https", None), getattr(args, "sign_in", None)
    config.https = https if https is not None else "tls" in state.get("ports", {})
    config.sign_in = sign_in if sign_in is not None else "oidc" in state.get("ports", {})
    # So does Prometheus (alerts), until --no-prometheus; the time scale applies when it starts.
    prometheus = getattr(args, "prometheus", None)
    config.prometheus = prometheus if prometheus is not None else "prometheus" in state.get("ports", {})
    config.alert_time_scale = getattr(args, "alert_time_scale", None) or config.alert_time_scale
    return config


def modes(stack: LocalStack) -> list[str]:
    """One line per mode: on or off, and the `up` option that turns it the other way."""
    on_off = (
        ("HTTPS", stack.config.https, "https", "the TLS terminator, as `exposure: public`"),
        ("sign-in", stack.config.sign_in, "sign-in", "a local OpenID provider, as `auth: entra`"),
    )
    return [
        f"{name + ' mode:':14}{'on ' if on else 'off'} ({what}); "
        f"`python -m local up --{'no-' if on else ''}{option}` turns it {'off' if on else 'on'}"
        for name, on, option, what in on_off
    ]


def _running_modes(stack: LocalStack) -> dict[str, bool] | None:
    """The modes of the services running now (None: nothing runs)."""
    status = stack.status()
    if not any(info["running"] for info in status.values()):
        return None
    ports = stack._load_state().get("ports", {})
    return {"https": "tls" in ports, "sign_in": "oidc" in ports}


def cmd_up(stack: LocalStack, args: argparse.Namespace) -> int:
    missing = missing_prerequisites(
        stack.config.repo_root,
        stack.config.helm,
        https=stack.config.https,
        sign_in=stack.config.sign_in,
        prometheus_server=stack.config.prometheus,
    )
    if missing:
        raise StackError("missing prerequisites: " + "; ".join(missing))
    running = _running_modes(stack)
    wanted = {"https": stack.config.https, "sign_in": stack.config.sign_in}
    if running is not None and running != wanted:
        # The server's chart values (redirect URI, sign-in app) follow the modes: restart, data kept.
        print("modes changed: stopping the running stack first (data kept) ...", flush=True)
        stack.stop()
    extra = " and the TLS terminator (with a local ACME CA)" if stack.config.https else ""
    if stack.config.sign_in:
        extra += " with single sign-on (a local OpenID provider)"
    if not stack.config.prometheus:
        stack.stop_prometheus()  # --no-prometheus: Prometheus alone stops, nothing else needs to
    print(f"starting MariaDB, Azurite, the tracking server{extra} under {stack.workdir} ...", flush=True)
    stack.start()
    up_ports = {STATE_PORT_KEYS[name]: getattr(stack.config, name) for name in PORT_FIELDS}
    stack._save_state({**stack._load_state(), "up_ports": up_ports})
    for line in modes(stack):
        print(line)
    if stack.config.sign_in:
        from local import oidc

        # The browser comes back to the redirect URI's host (localhost): start there, so the session
        # cookie is the one it keeps (browsers accept a Secure cookie from http://localhost).
        ui = stack.browser_uri
        print(f"MLflow UI and API: {ui}  (sign in through the local OpenID provider as one of:")
        for line in oidc.users_summary():
            print(f"  {line}")
        print(")  scripts: `export MLFLOW_TRACKING_TOKEN=$(python -m local token admin@local)`")
    else:
        user, _ = stack.admin_credentials()
        print(f"MLflow UI and API: {stack.browser_uri}  (log in as {user!r}; `python -m local credentials`)")
    if stack.config.https:
        print(
            f"HTTPS: certificate from the local ACME CA; clients trust {stack.ca_bundle} "
            "(MLFLOW_TRACKING_SERVER_CERT_PATH)"
        )
    if stack.config.prometheus:
        print(
            f"Prometheus: http://127.0.0.1:{stack.config.prometheus_port}/alerts (the alert rules, time "
            f"{stack.config.alert_time_scale:g} times faster)"
        )
    print(f"artifacts: {stack.artifacts_destination} -> Azurite on 127.0.0.1:{stack.config.azurite_port}")
    print(f"database:  MariaDB on 127.0.0.1:{stack.config.mysql_port}")
    return 0


def cmd_down(stack: LocalStack, args: argparse.Namespace) -> int:
    if args.purge:
        stack.purge()
        print(f"stopped; deleted {stack.workdir}")
    else:
        stack.stop()
        print("stopped (data kept; `down --purge` deletes it)")
    return 0


def cmd_status(stack: LocalStack, args: argparse.Namespace) -> int:
    status = stack.status()
    for name, info in status.items():
        state = f"running, pid {info['pid']}" if info["running"] else "stopped"
        where = f"127.0.0.1:{info['port']}" if info["port"] is not None else "(no port: the job runner)"
        print(f"{name:8} {state:22} {where}")
    if status["server"]["running"]:
        print(f"MLflow: {stack.browser_uri}")
    return 0 if all(info["running"] for info in status.values()) else 3


def cmd_credentials(stack: LocalStack, args: argparse.Namespace) -> int:
    if not (stack.workdir / "secrets.json").exists():
        raise StackError(f"no stack in {stack.workdir}: run `python -m local up` first")
    user, password = stack.admin_credentials()
    print(f"username: {user}\npassword: {password}")
    return 0


# How MLflow's client reports a 403 of the tracking server (mlflow/utils/rest_utils.py): basic-auth's
# plain-text body "Permission denied" as "... error code 403 != 200. Response body: 'Permission denied'";
# mlflow-oidc-auth's {"message": "Permission denied"} as "INTERNAL_ERROR: Permission denied"; serve.py's
# group gate as "PERMISSION_DENIED: ...". Not "[Errno 13] Permission denied" (a file).
DENIED = re.compile(r"error code 403 |INTERNAL_ERROR: Permission denied|PERMISSION_DENIED")


#: What `run-project -e` runs: `both` (the default) is train, then evaluate of that run.
ENTRY_POINTS = {"both": ["train", "evaluate"], "train": ["train"], "evaluate": ["evaluate"]}


def permission_hint(stack: LocalStack, result: RunResult) -> str | None:
    """What to do when the run's user may not write its experiment (None: that is not why it failed)."""
    if not DENIED.search(result.output):
        return None
    if stack.config.sign_in:
        grant = f"as admin, in {stack.browser_uri}/oidc/ui"
    else:
        grant = "as admin: docs/local-stack.md#run-the-project has the command"
    return (
        f"run-project: the server refused to let {result.user!r}, the user runs log in as, write there: "
        "it may only read experiments other users created. Use a new experiment name, or give "
        f"{result.user!r} EDIT on that experiment ({grant})"
    )


def cmd_run_project(stack: LocalStack, args: argparse.Namespace) -> int:
    if not stack.status()["server"]["running"]:
        raise StackError("the tracking server is not running: run `python -m local up` first")
    params = parse_params(args.param)
    entry_points = ENTRY_POINTS[args.entry_point]
    train_run = None
    for entry_point in entry_points:
        if entry_point == "train":
            result = stack.run_project("train", args.experiment, params, echo=True)
            train_run = result.run_id
        else:
            eval_params = {
                "experiment_name": args.experiment,
                **(params if args.entry_point == "evaluate" else {}),
            }
            if train_run:
                eval_params["run_id"] = train_run
            result = stack.run_project("evaluate", args.experiment + "_eval", eval_params, echo=True)
        if result.returncode != 0:
            print(f"run-project: {entry_point} failed (exit {result.returncode})", file=sys.stderr)
            if hint := permission_hint(stack, result):
                print(hint, file=sys.stderr)
            return result.returncode or 1
    print(f"run-project: done; see {stack.browser_uri}/#/experiments")
    return 0


def _require_running_database(stack: LocalStack) -> None:
    status = stack.status()
    if not (status["mariadb"]["running"] and status["azurite"]["running"]):
        raise StackError("MariaDB and Azurite must run: `python -m local up` first")


def cmd_backup(stack: LocalStack, args: argparse.Namespace) -> int:
    _require_running_database(stack)
    taken = stack.backup("manual")
    print(f"backup {taken['name']}: {taken['rows']} rows, {taken['bytes']} bytes, {taken['seconds']} s")
    return 0


def cmd_backups(stack: LocalStack, args: argparse.Namespace) -> int:
    _require_running_database(stack)
    backups = stack.backups()
    width = max((len(b["name"]) for b in backups), default=0)
    for backup in backups:
        runs, rows = (backup["metadata"].get(key, "?") for key in ("runs", "rows"))
        print(
            f"{backup['name']:<{width}}  {backup['kind']:<13} {runs:>7} runs {rows:>9} rows "
            f"{backup['size']:>12,} bytes"
        )
    return 0


def cmd_restore(stack: LocalStack, args: argparse.Namespace) -> int:
    if args.to and args.name:
        raise StackError("restore --to chooses the backup itself: give no name")
    done = stack.restore(args.name or "latest", force=args.force, to=args.to)
    print(f"restored {done['restored']}: {done['runs']} runs, {done['rows']} rows in {done['seconds']} s")
    if point := done.get("point_in_time"):
        print(
            f"then replayed {len(point['logs'])} binary log(s) up to {point['to']} "
            f"(logs shipped until {point['shipped_until'] or 'none after the backup'})"
        )
    if done["safety_backup"]:
        print(f"what was there before is backup {done['safety_backup']} (restore it by name to undo)")
    else:
        print("the databases held no table before: nothing to keep")
    if done["created"]:
        print(f"created the missing database(s): {', '.join(done['created'])}")
    print(f"MLflow: {stack.browser_uri}")
    return 0


def cmd_ship_binlogs(stack: LocalStack, args: argparse.Namespace) -> int:
    _require_running_database(stack)
    shipped = stack.ship_binlogs()
    print(f"shipped {len(shipped['shipped'])} binary log(s): {', '.join(shipped['shipped']) or 'none new'}")
    return 0


def cmd_gc(stack: LocalStack, args: argparse.Namespace) -> int:
    _require_running_database(stack)
    print(stack.collect_garbage().strip() or "gc: nothing to delete")
    return 0


def cmd_token(stack: LocalStack, args: argparse.Namespace) -> int:
    """A bearer token of the local OpenID provider (sign-in mode), for MLFLOW_TRACKING_TOKEN."""
    print(stack.bearer_token(args.user))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", default=str(StackConfig().workdir), help="working directory (default: .local-stack)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start MariaDB, Azurite and the tracking server (idempotent)")
    defaults = StackConfig()
    for name, what in (
        ("server_port", "tracking server port"),
        ("mysql_port", "MariaDB port"),
        ("azurite_port", "Azurite blob port"),
        ("metrics_port", "tracking server's Prometheus metrics port"),
        ("https_port", "HTTPS port with --https"),
        ("http_port", "HTTP port of the TLS terminator with --https (ACME challenge, redirect)"),
        ("acme_port", "local ACME CA port with --https"),
        ("acme_management_port", "local ACME CA's management port with --https"),
        ("oidc_port", "local OpenID provider port with --sign-in"),
        ("prometheus_port", "Prometheus port with --prometheus"),
    ):
        default = getattr(defaults, name) or "a free one"
        up.add_argument(f"--{name.replace('_', '-')}", type=int, help=f"{what} (default {default})")
    up.add_argument(
        "--https",
        action=argparse.BooleanOptionalAction,
        help="serve HTTPS through the chart's TLS terminator, as `exposure: public` does (Caddy, Pebble); "
        "remembered until --no-https",
    )
    up.add_argument(
        "--sign-in",
        action=argparse.BooleanOptionalAction,
        help="single sign-on (auth: entra) with a local OpenID provider in place of Entra ID; "
        "remembered until --no-sign-in",
    )
    up.add_argument(
        "--prometheus",
        action=argparse.BooleanOptionalAction,
        help="also run Prometheus: it scrapes the server's metrics and evaluates the alert rules; "
        "remembered until --no-prometheus",
    )
    up.add_argument(
        "--alert-time-scale",
        type=float,
        help="with --prometheus: time in the alert rules runs this much faster (3600: an hour a second)",
    )
    down = sub.add_parser("down", help="stop everything the stack started")
    down.add_argument("--purge", action="store_true", help="also delete the working directory (all data)")
    sub.add_parser("status", help="what is running (exit 3 if not everything)")
    sub.add_parser("credentials", help="print the admin user and password")
    token = sub.add_parser("token", help="with --sign-in: a user's bearer token (MLFLOW_TRACKING_TOKEN)")
    token.add_argument("user", nargs="?", default="admin@local", help="a local user (default admin@local)")
    run = sub.add_parser("run-project", help="mlflow run the project's train, then evaluate, on the stack")
    run.add_argument(
        "--experiment", default="local-demo", help="training experiment (evaluate uses <name>_eval)"
    )
    run.add_argument(
        "-e",
        "--entry-point",
        choices=list(ENTRY_POINTS),
        default="both",
        help="both (default): train, then evaluate that run; train or evaluate (the latest train run) alone",
    )
    run.add_argument("-P", "--param", action="append", default=[], help="key=value for the entry point")
    sub.add_parser("backup", help="back up both databases now (the chart's backup CronJob)")
    sub.add_parser("backups", help="list the complete backups, oldest first")
    restore = sub.add_parser(
        "restore", help="restore a backup (from any state: databases dropped, server down) and serve it"
    )
    restore.add_argument(
        "name",
        nargs="?",
        help="`latest` (the newest but pre-restore copies; the default), or a name from `backups`",
    )
    restore.add_argument(
        "--to",
        metavar="TIME",
        help="as the databases were at TIME (2026-12-02T14:30:00Z): backup + binary logs",
    )
    restore.add_argument(
        "--force", action="store_true", help="replace databases holding runs with a backup holding none"
    )
    sub.add_parser("ship-binlogs", help="run the chart's binlog CronJob now (ship the closed binary logs)")
    sub.add_parser("gc", help="run the chart's gc CronJob now (mlflow gc --older-than <gc.olderThan>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    stack = LocalStack(_config(args))
    handlers = {
        "up": cmd_up,
        "down": cmd_down,
        "status": cmd_status,
        "credentials": cmd_credentials,
        "token": cmd_token,
        "run-project": cmd_run_project,
        "backup": cmd_backup,
        "backups": cmd_backups,
        "restore": cmd_restore,
        "ship-binlogs": cmd_ship_binlogs,
        "gc": cmd_gc,
    }
    try:
        return handlers[args.command](stack, args)
    except StackError as err:
        print(f"local stack: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("local stack: interrupted; `python -m local down` stops what was started", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
