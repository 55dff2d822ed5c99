"""Prometheus (Debian's package) on the local stack: scrapes the tracking server's metrics port and
evaluates the platform's alert rules (alerts/rules.yaml), as Azure Monitor managed Prometheus does on the
cluster.

The rules are the same file with time compressed by `time_scale` (alerts.compressed): with 3600, an hour
passes in a second, so "no backup for 26 hours" fires 26 seconds after the last backup. Bound to
127.0.0.1; its data lives under the stack's working directory.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import yaml

import alerts
from local.procs import Proc, port_in_use, spawn, wait_until

INSTALL_HINT = "install Prometheus: apt-get install prometheus (or run scripts/bootstrap)"
JOB = "mlflow-tracking"


def binary() -> str | None:
    return shutil.which("prometheus")


def write_config(location: Path, metrics_port: int, time_scale: float, interval: float = 1.0) -> Path:
    """prometheus.yml and rules.yaml under `location`: one scrape job (the server's metrics port), the
    alert rules with time `time_scale` times faster, scraped and evaluated every `interval` seconds."""
    location.mkdir(parents=True, exist_ok=True)
    rules = location / "rules.yaml"
    rules.write_text(yaml.safe_dump(alerts.compressed(time_scale, min_range=2 * interval), sort_keys=False))
    config = location / "prometheus.yml"
    every = f"{round(interval * 1000)}ms"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": every, "evaluation_interval": every, "scrape_timeout": every},
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {"job_name": JOB, "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}]}
                ],
            },
            sort_keys=False,
        )
    )
    return config


def start(location: Path, port: int, config: Path) -> Proc:
    argv = [
        binary() or "prometheus",
        f"--config.file={config}",
        f"--storage.tsdb.path={location / 'data'}",
        "--storage.tsdb.retention.time=1d",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    return spawn("prometheus", argv, env={"PATH": "/usr/bin:/bin"}, log=location / "prometheus.log")


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_ready(proc: Proc, port: int, timeout: float = 60) -> None:
    wait_until(
        "Prometheus to be ready", lambda: port_in_use(port) and ready(port), timeout=timeout, proc=proc
    )


def api(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}", timeout=5) as answer:
        body = json.load(answer)
    return body["data"]


def alert_states(port: int) -> dict[str, str]:
    """Active alerts by name: `pending` or `firing` (an alert not listed is inactive)."""
    return {alert["labels"]["alertname"]: alert["state"] for alert in api(port, "alerts")["alerts"]}
