"""The alert rules (alerts/rules.yaml): promtool's unit tests pass, every alert is tested firing and not
firing, each has a severity Azure knows and a runbook in docs/operations.md, and the local stack's
time-compressed copy is still a valid rule file that keeps every rule's meaning."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import alerts
from tests.test_readme import _anchors

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    assert Path(PROMTOOL).exists(), "promtool is missing: run scripts/bootstrap (Debian's prometheus)"
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_unit_tests_pass() -> None:
    done = _promtool("test", "rules", alerts.TESTS_FILE.name, cwd=alerts.TESTS_FILE.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = yaml.safe_load(alerts.TESTS_FILE.read_text())["tests"]
    firing, quiet = set(), set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts.alerts()}
    assert names, "no alerts in alerts/rules.yaml"
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested staying quiet"


# The issue's alerts, each with the rule that answers it.
REQUIRED = {
    "MlflowBackupMissing": "mlflow_aks_last_backup_success_timestamp_seconds",
    "MlflowBackupFailed": "mlflow_aks_last_backup_failure_timestamp_seconds",
    "MlflowBinlogShippingStale": "mlflow_aks_last_binlog_shipment_success_timestamp_seconds",
    "MlflowCertificateExpiring": "mlflow_aks_tls_certificate_expiry_timestamp_seconds",
    "MlflowTrackingErrors": 'mlflow_http_requests_total{status=~"5.."}',
    "MlflowTrackingUnavailable": "kube_deployment_status_replicas_ready",
    "MlflowDatabaseDiskFilling": "kubelet_volume_stats_used_bytes",
    "MlflowRunJobFailed": "kube_job_status_failed",
}


def test_the_issues_alerts_exist_on_the_metrics_that_answer_them() -> None:
    by_name = {rule["alert"]: rule for rule in alerts.alerts()}
    for name, metric in REQUIRED.items():
        assert name in by_name, name
        assert metric in " ".join(by_name[name]["expr"].split()), name


def test_each_alert_has_a_known_severity_a_summary_and_a_runbook_section(repo_root: Path) -> None:
    operations = repo_root / "docs" / "operations.md"
    anchors = _anchors(operations)
    for rule in alerts.alerts():
        assert rule["labels"]["severity"] in alerts.AZURE_SEVERITY, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "docs/operations.md" and anchor == rule["alert"].lower(), rule["alert"]
        assert anchor in anchors, f"docs/operations.md has no section {anchor!r}"


@pytest.mark.parametrize(
    ("prometheus", "azure"), [("5m", "PT5M"), ("10m", "PT10M"), ("1h30m", "PT1H30M"), ("26h", "PT26H")]
)
def test_durations_become_iso_8601(prometheus: str, azure: str) -> None:
    assert alerts.azure_duration(prometheus) == azure


def test_compressed_rules_divide_every_duration_and_still_load(tmp_path: Path) -> None:
    scale = 3600.0
    fast = {rule["alert"]: rule for group in alerts.compressed(scale)["groups"] for rule in group["rules"]}
    for rule in alerts.alerts():
        quick = fast[rule["alert"]]
        if "for" in rule:
            assert alerts.seconds(quick["for"]) == pytest.approx(
                alerts.seconds(rule["for"]) / scale, abs=0.001
            )
    # 26 hours become 26 seconds; rate windows keep two scrapes at least.
    assert "> 26 " in " ".join(fast["MlflowBackupMissing"]["expr"].split()) + " "
    assert "[2000ms]" in fast["MlflowTrackingErrors"]["expr"]
    (tmp_path / "fast.yaml").write_text(yaml.safe_dump(alerts.compressed(scale)))
    done = _promtool("check", "rules", "fast.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_local_prometheus_scrapes_the_servers_metrics_port_with_the_compressed_rules(
    tmp_path: Path,
) -> None:
    from local import prometheus

    config = yaml.safe_load(prometheus.write_config(tmp_path, 19090, 3600.0).read_text())
    [job] = config["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["127.0.0.1:19090"]}]
    [rules_path] = config["rule_files"]
    assert yaml.safe_load(Path(rules_path).read_text()) == alerts.compressed(3600.0, min_range=2.0)
    done = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_up_with_prometheus_names_it_when_it_is_missing(monkeypatch) -> None:
    from local import prometheus
    from local.stack import missing_prerequisites

    monkeypatch.setattr(prometheus, "binary", lambda: None)
    assert any("Prometheus" in item for item in missing_prerequisites(prometheus_server=True))
    assert not any("Prometheus" in item for item in missing_prerequisites(prometheus_server=False))


def test_up_remembers_prometheus_until_no_prometheus(tmp_path: Path, monkeypatch, capsys) -> None:
    import local.__main__ as cli
    from local import LocalStack

    def start(stack: LocalStack) -> None:  # the state as each service's start records it; nothing runs
        stack.workdir.mkdir(parents=True, exist_ok=True)
        stack.metrics_port  # noqa: B018
        for name in stack.config.services:
            stack._record(None, name)

    stopped: list[bool] = []
    monkeypatch.setattr(cli, "missing_prerequisites", lambda *a, **k: [])
    monkeypatch.setattr(LocalStack, "start", start)
    monkeypatch.setattr(LocalStack, "stop_prometheus", lambda stack: stopped.append(True))
    workdir = str(tmp_path / "stack")

    def later():
        return cli._config(cli.build_parser().parse_args(["--workdir", workdir, "status"]))

    argv = ["--workdir", workdir, "up", "--prometheus", "--prometheus-port=19091", "--alert-time-scale=3600"]
    assert cli.main(argv) == 0
    assert "Prometheus: http://127.0.0.1:19091/alerts" in capsys.readouterr().out
    assert (later().prometheus, later().prometheus_port) == (True, 19091)
    assert cli.main(["--workdir", workdir, "up"]) == 0 and later().prometheus and not stopped
    assert cli.main(["--workdir", workdir, "up", "--no-prometheus"]) == 0
    assert not later().prometheus and stopped
