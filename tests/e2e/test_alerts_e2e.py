"""The backup alert on the real stack: Prometheus (Debian's) scrapes the tracking server's metrics port and
evaluates alerts/rules.yaml with time compressed (26 hours in 8 seconds): MlflowBackupMissing stays quiet
while backups run, fires once they stop for longer than its threshold, and resolves with the next backup.
The backups are the chart's backup CronJob's container (backup.py records each success in the user
database, the server exposes it), so the same chain as on the cluster is exercised end to end."""

from __future__ import annotations

import dataclasses
import time

from local import LocalStack, free_port
from local.procs import wait_until

ALERT = "MlflowBackupMissing"
THRESHOLD_SECONDS = 8.0  # what the rule's 26 hours become
SCALE = 26 * 3600 / THRESHOLD_SECONDS


def _last_success(fast: LocalStack) -> float | None:
    from local import prometheus

    found = prometheus.api(
        fast.config.prometheus_port, "query?query=mlflow_aks_last_backup_success_timestamp_seconds"
    )
    return float(found["result"][0]["value"][1]) if found["result"] else None


def test_backup_missing_fires_when_backups_stop_and_not_while_they_run(stack: LocalStack) -> None:
    config = dataclasses.replace(
        stack.config, prometheus=True, prometheus_port=free_port(), alert_time_scale=SCALE
    )
    fast = LocalStack(config)
    fast.start_prometheus()
    try:
        stack.backup()
        taken = time.time()
        # Scraped: Prometheus holds the time backup.py recorded in the database.
        wait_until(
            "Prometheus to scrape the backup's time",
            lambda: (_last_success(fast) or 0) >= taken - 5,
            timeout=15,
        )
        wait_until(
            f"{ALERT} to be inactive after a backup", lambda: ALERT not in fast.alert_states(), timeout=10
        )

        # Backups keep coming (more often than the threshold): the alert never fires.
        seen, gaps = set(), []
        started = last = time.monotonic()
        while last - started < 1.1 * THRESHOLD_SECONDS:
            seen.add(fast.alert_states().get(ALERT, "inactive"))
            stack.backup()
            gaps.append(time.monotonic() - last)
            last = time.monotonic()
        seen.add(fast.alert_states().get(ALERT, "inactive"))
        assert max(gaps) < THRESHOLD_SECONDS, f"backups too slow to show the alert staying quiet: {gaps}"
        assert seen == {"inactive"}, seen

        # They stop: the alert fires once the last backup is older than the threshold, not before.
        stopped = time.monotonic()
        wait_until(f"{ALERT} to fire", lambda: fast.alert_states().get(ALERT) == "firing", timeout=30)
        waited = time.monotonic() - stopped
        assert THRESHOLD_SECONDS - 1.5 <= waited <= THRESHOLD_SECONDS + 8, waited

        # The next backup resolves it.
        stack.backup()
        wait_until(f"{ALERT} to resolve", lambda: ALERT not in fast.alert_states(), timeout=15)
        print(f"backups every {max(gaps):.1f}s at most; fired {waited:.1f}s after the last one")
    finally:
        fast.stop_prometheus()
