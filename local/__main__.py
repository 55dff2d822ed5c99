"""`python -m local up|down|status|credentials|token|run-project`: the local stack from the command line.

Ports given to `up` are remembered in the working directory's state, so the other commands find
the running stack without repeating them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from local.procs import StackError
from local.stack import LocalStack, StackConfig, missing_prerequisites, parse_params


def _config(args: argparse.Namespace) -> StackConfig:
    config = StackConfig(workdir=Path(args.workdir))
    try:
        remembered = json.loads((Path(args.workdir) / "state.json").read_text()).get("ports", {})
    except (FileNotFoundError, json.JSONDecodeError):
        remembered = {}
    config.mysql_port = getattr(args, "mysql_port", None) or remembered.get("mariadb", config.mysql_port)
    config.azurite_port = getattr(args, "azurite_port", None) or remembered.get(
        "azurite", config.azurite_port
    )
    config.server_port = getattr(args, "server_port", None) or remembered.get("server", config.server_port)
    # HTTPS, once asked for, is remembered too (its ports are in the state while it runs).
    config.https = bool(getattr(args, "https", False)) or "tls" in remembered
    config.https_port = getattr(args, "https_port", None) or remembered.get("tls", config.https_port)
    config.acme_port = getattr(args, "acme_port", None) or remembered.get("acme", config.acme_port)
    # So is single sign-on (the local OpenID provider's port is in the state while it runs).
    config.sign_in = bool(getattr(args, "sign_in", False)) or "oidc" in remembered
    config.oidc_port = getattr(args, "oidc_port", None) or remembered.get("oidc", config.oidc_port)
    return config


def cmd_up(stack: LocalStack, args: argparse.Namespace) -> int:
    missing = missing_prerequisites(
        stack.config.repo_root, stack.config.helm, https=stack.config.https, sign_in=stack.config.sign_in
    )
    if missing:
        raise StackError("missing prerequisites: " + "; ".join(missing))
    extra = " and the TLS terminator (with a local ACME CA)" if stack.config.https else ""
    if stack.config.sign_in:
        extra += " with single sign-on (a local OpenID provider)"
    print(f"starting MariaDB, Azurite, the tracking server{extra} under {stack.workdir} ...", flush=True)
    stack.start()
    if stack.config.sign_in:
        from local import oidc

        # The browser comes back to the redirect URI's host (localhost): start there, so the session
        # cookie is the one it keeps (browsers accept a Secure cookie from http://localhost).
        ui = stack.redirect_uri.removesuffix("/callback")
        print(f"MLflow UI and API: {ui}  (sign in through the local OpenID provider as one of:")
        for line in oidc.users_summary():
            print(f"  {line}")
        print(")  scripts: `export MLFLOW_TRACKING_TOKEN=$(python -m local token admin@local)`")
    else:
        user, _ = stack.admin_credentials()
        print(f"MLflow UI and API: {stack.public_uri}  (log in as {user!r}; `python -m local credentials`)")
    if stack.config.https:
        print(
            f"HTTPS: certificate from the local ACME CA; clients trust {stack.ca_bundle} "
            "(MLFLOW_TRACKING_SERVER_CERT_PATH)"
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
        print(f"MLflow: {stack.public_uri}")
    return 0 if all(info["running"] for info in status.values()) else 3


def cmd_credentials(stack: LocalStack, args: argparse.Namespace) -> int:
    if not (stack.workdir / "secrets.json").exists():
        raise StackError(f"no stack in {stack.workdir}: run `python -m local up` first")
    user, password = stack.admin_credentials()
    print(f"username: {user}\npassword: {password}")
    return 0


def cmd_run_project(stack: LocalStack, args: argparse.Namespace) -> int:
    if not stack.status()["server"]["running"]:
        raise StackError("the tracking server is not running: run `python -m local up` first")
    params = parse_params(args.param)
    entry_points = ["train", "evaluate"] if args.entry_point == "both" else [args.entry_point]
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
            if "PERMISSION_DENIED" in result.output:
                user, _ = stack.run_credentials()
                print(
                    f"run-project: runs log in as the non-admin user {user!r}, which may only read "
                    "experiments other users created: use a new experiment name, or give it EDIT on "
                    "that experiment (as admin, in the UI)",
                    file=sys.stderr,
                )
            return result.returncode or 1
    print(f"run-project: done; see {stack.tracking_uri}/#/experiments")
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
    print(f"MLflow: {stack.public_uri}")
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir", default=str(StackConfig().workdir), help="working directory (default: .local-stack)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start MariaDB, Azurite and the tracking server (idempotent)")
    up.add_argument("--server-port", type=int, help="tracking server port (default 5000)")
    up.add_argument("--mysql-port", type=int, help="MariaDB port (default 13306)")
    up.add_argument("--azurite-port", type=int, help="Azurite blob port (default 10000)")
    up.add_argument(
        "--https",
        action="store_true",
        help="serve HTTPS through the chart's TLS terminator, as `exposure: public` does (Caddy, Pebble)",
    )
    up.add_argument("--https-port", type=int, help="HTTPS port with --https (default 5443)")
    up.add_argument("--acme-port", type=int, help="local ACME CA port with --https (default 14000)")
    up.add_argument(
        "--sign-in",
        action="store_true",
        help="single sign-on (auth: entra) with a local OpenID provider in place of Entra ID",
    )
    up.add_argument("--oidc-port", type=int, help="local OpenID provider port with --sign-in (default 9400)")
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
    run.add_argument("-e", "--entry-point", choices=["both", "train", "evaluate"], default="both")
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
    args = parser.parse_args(argv)

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
