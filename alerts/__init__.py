"""The platform's alert rules (rules.yaml, a Prometheus rule file): read once, used three ways.

- `groups()`: the rule groups as written, for the Pulumi program (components/alerts.py), which declares
  each as an Azure Monitor Prometheus rule group (`azure_duration`, `azure_severity` translate);
- rules.test.yaml: promtool's unit tests of every rule (tests/test_alert_rules.py);
- `compressed(scale)`: the same rules with time run `scale` times faster, for the local stack's
  Prometheus, so that "no backup for 26 hours" can be shown in seconds (`python -m local up
  --prometheus --alert-time-scale N`).

No Pulumi here: the local stack imports this too.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

RULES_FILE = Path(__file__).resolve().parent / "rules.yaml"
TESTS_FILE = Path(__file__).resolve().parent / "rules.test.yaml"
# Azure Monitor's severities (0 Critical ... 4 Verbose) for the rules' `severity` label
# (https://learn.microsoft.com/azure/azure-monitor/alerts/alerts-overview#alert-severity).
AZURE_SEVERITY = {"critical": 0, "warning": 2}

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?$")
_UNITS = (86400, 3600, 60, 1, 0.001)
# Thresholds in time inside expressions: `<n> * 3600` (hours), `<n> * 86400` (days).
_TIME_THRESHOLD = re.compile(r"\b(\d+) \* (3600|86400)\b")
_RANGE = re.compile(r"\[(\w+)\]")


def groups(path: Path = RULES_FILE) -> list[dict[str, Any]]:
    """The rule groups of the rule file: [{name, rules: [{alert, expr, for?, labels, annotations}]}]."""
    return yaml.safe_load(path.read_text())["groups"]


def alerts(path: Path = RULES_FILE) -> list[dict[str, Any]]:
    """Every alerting rule, in file order."""
    return [rule for group in groups(path) for rule in group["rules"] if "alert" in rule]


def seconds(duration: str) -> float:
    """A Prometheus duration (`5m`, `1h30m`, `250ms`) in seconds."""
    match = _DURATION.fullmatch(duration)
    if not duration or not match:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(part) * unit for part, unit in zip(match.groups(), _UNITS, strict=True) if part)


def azure_duration(duration: str) -> str:
    """A Prometheus duration as ISO 8601, as Azure's rule `for` takes it: `5m` -> `PT5M`."""
    total = int(seconds(duration))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}H" if hours else "", f"{minutes}M" if minutes else "", f"{secs}S" if secs else ""]
    return "PT" + ("".join(parts) or "0S")


def azure_severity(rule: dict[str, Any]) -> int:
    """Azure Monitor's severity for the rule's `severity` label."""
    return AZURE_SEVERITY[rule["labels"]["severity"]]


def _duration(value: float) -> str:
    return f"{max(1, round(value * 1000))}ms"


def compressed(scale: float, path: Path = RULES_FILE, min_range: float = 2.0) -> dict[str, Any]:
    """The rule file with time `scale` times faster: every `for`, every range (never below `min_range`
    seconds, two scrapes) and every `<n> * 3600|86400` threshold divided by `scale`."""
    if scale <= 0:
        raise ValueError("the time scale must be positive")
    document = {"groups": copy.deepcopy(groups(path))}
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = _duration(seconds(rule["for"]) / scale)
            expr = _TIME_THRESHOLD.sub(lambda m: f"{int(m[1]) * int(m[2]) / scale:g}", rule["expr"])
            rule["expr"] = _RANGE.sub(lambda m: f"[{_duration(max(min_range, seconds(m[1]) / scale))}]", expr)
    return document
