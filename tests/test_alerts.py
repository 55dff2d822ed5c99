"""The alerts on Azure (components/alerts.py), under Pulumi mocks: managed Prometheus wired to an Azure
Monitor workspace, every rule of alerts/rules.yaml in a rule group scoped to the workspace and the cluster,
enabled and acting through an action group that mails config alertEmails; the add-on scrapes the
platform's pods and keeps the kube-state-metrics series the rules read. And config alertEmails' rules."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from pulumi_mocks import run_program

import alerts
from components.alerts import DATABASE_GROUP, EXTRA_KUBE_STATE_METRICS, SETTINGS_CONFIGMAP
from settings import SettingsError

CLUSTER = "azure-native:containerservice:ManagedCluster"
WORKSPACE = "azure-native:monitor:AzureMonitorWorkspace"
ENDPOINT = "azure-native:monitor:DataCollectionEndpoint"
RULE = "azure-native:monitor:DataCollectionRule"
ASSOCIATION = "azure-native:monitor:DataCollectionRuleAssociation"
ACTION_GROUP = "azure-native:monitor:ActionGroup"
RULE_GROUP = "azure-native:alertsmanagement:PrometheusRuleGroup"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
EMAILS = ["OnCall@Example.com", "platform-team@example.org", "oncall@example.com"]


@pytest.fixture(scope="module")
def run():
    return run_program({"alertEmails": EMAILS, "namespace": "mlflow-prod", "namePrefix": "mlops"})


def _id(resource) -> str:
    return resource.outputs["id"]


def test_managed_prometheus_writes_to_the_stacks_workspace(run):
    workspace = run.one(WORKSPACE)
    cluster = run.one(CLUSTER)
    assert (
        workspace.plain_inputs["resourceGroupName"]
        == run.one("azure-native:resources:ResourceGroup", "groups-platform").outputs["name"]
    )
    assert cluster.plain_inputs["azureMonitorProfile"]["metrics"]["enabled"] is True
    endpoint, rule = run.one(ENDPOINT), run.one(RULE)
    inputs = rule.plain_inputs
    assert inputs["dataCollectionEndpointId"] == _id(endpoint)
    [forwarder] = inputs["dataSources"]["prometheusForwarder"]
    [account] = inputs["destinations"]["monitoringAccounts"]
    assert account["accountResourceId"] == _id(workspace)
    assert inputs["dataFlows"] == [
        {"streams": ["Microsoft-PrometheusMetrics"], "destinations": [account["name"]]}
    ]
    assert forwarder["streams"] == ["Microsoft-PrometheusMetrics"]
    associations = {a.plain_inputs["associationName"]: a.plain_inputs for a in run.of_type(ASSOCIATION)}
    assert associations["ContainerInsightsMetricsExtension"]["resourceUri"] == _id(cluster)
    assert associations["ContainerInsightsMetricsExtension"]["dataCollectionRuleId"] == _id(rule)
    assert associations["configurationAccessEndpoint"]["resourceUri"] == _id(cluster)
    assert associations["configurationAccessEndpoint"]["dataCollectionEndpointId"] == _id(endpoint)


def test_the_action_group_mails_each_configured_address_once(run):
    group = run.one(ACTION_GROUP).plain_inputs
    assert group["enabled"] is True
    assert group["location"] == "Global"
    assert len(group["groupShortName"]) <= 12
    assert [r["emailAddress"] for r in group["emailReceivers"]] == [
        "oncall@example.com",
        "platform-team@example.org",
    ]
    assert len({r["name"] for r in group["emailReceivers"]}) == 2


def test_every_rule_of_the_rules_file_runs_on_azure_and_acts_through_the_action_group(run):
    workspace, cluster, action_group = run.one(WORKSPACE), run.one(CLUSTER), run.one(ACTION_GROUP)
    declared = {g.plain_inputs["ruleGroupName"]: g.plain_inputs for g in run.of_type(RULE_GROUP)}
    source = alerts.groups()
    assert sorted(declared) == sorted(f"mlops-{group['name']}" for group in source)
    for group in source:
        azure = declared[f"mlops-{group['name']}"]
        assert azure["enabled"] is True
        assert azure["scopes"] == [_id(workspace), _id(cluster)]
        assert azure["clusterName"] == cluster.outputs["name"]
        rules = {rule["alert"]: rule for rule in azure["rules"]}
        assert sorted(rules) == sorted(rule["alert"] for rule in group["rules"])
        for rule in group["rules"]:
            made = rules[rule["alert"]]
            assert made["expression"] == " ".join(rule["expr"].split())
            assert made.get("for") == (alerts.azure_duration(rule["for"]) if "for" in rule else None)
            assert made["severity"] == alerts.AZURE_SEVERITY[rule["labels"]["severity"]]
            assert made["labels"] == rule["labels"]
            assert made["annotations"] == rule["annotations"]
            assert made["enabled"] is True
            assert made["actions"] == [{"actionGroupId": _id(action_group)}]
            assert made["resolveConfiguration"]["autoResolved"] is True


def test_the_addon_scrapes_the_platforms_pods_and_keeps_what_the_rules_read(run):
    settings = run.one(CONFIG_MAP, "alerts-metrics-settings")
    inputs = settings.plain_inputs
    assert inputs["metadata"]["name"] == SETTINGS_CONFIGMAP
    assert inputs["metadata"]["namespace"] == "kube-system"
    assert settings.provider and "cluster-k8s" in settings.provider
    assert inputs["data"]["pod-annotation-based-scraping"] == 'podannotationnamespaceregex = "mlflow-prod"'
    keep = inputs["data"]["default-targets-metrics-keep-list"]
    assert "minimalingestionprofile = true" in keep
    rule_text = " ".join(rule["expr"] for rule in alerts.alerts())
    for metric in EXTRA_KUBE_STATE_METRICS:
        assert metric in keep and metric in rule_text


def test_no_address_still_declares_the_alerts_and_warns(monkeypatch):
    warnings: list[str] = []
    original = pulumi.log.warn
    monkeypatch.setattr(
        pulumi.log, "warn", lambda message, *a, **k: (warnings.append(message), original(message, *a, **k))
    )
    run = run_program({})
    assert run.one(ACTION_GROUP).plain_inputs.get("emailReceivers", []) == []
    assert len(run.of_type(RULE_GROUP)) == len(alerts.groups())
    assert any("alertEmails is empty" in w for w in warnings)


def test_a_flexible_server_leaves_out_the_in_cluster_database_alerts():
    """Its backups and storage are Azure's: no backup Job records anything, no claim fills up."""
    run = run_program({"database": "flexibleServer", "namePrefix": "mlops"})
    declared = sorted(g.plain_inputs["ruleGroupName"] for g in run.of_type(RULE_GROUP))
    expected = sorted(f"mlops-{g['name']}" for g in alerts.groups() if g["name"] != DATABASE_GROUP)
    assert declared == expected
    assert DATABASE_GROUP in [g["name"] for g in alerts.groups()]
    database_alerts = next(g for g in alerts.groups() if g["name"] == DATABASE_GROUP)["rules"]
    assert {r["alert"] for r in database_alerts} >= {"MlflowBackupMissing", "MlflowDatabaseDiskFilling"}


@pytest.mark.parametrize(
    ("emails", "key"),
    [
        (["oncall"], "alertEmails[0]"),
        (["ok@example.com", "two@@example.com"], "alertEmails[1]"),
        (["oncall@example"], "alertEmails[0]"),
        (["a@example.com"] * 1001, "alertEmails"),
    ],
)
def test_alert_emails_must_be_addresses(emails: list[Any], key: str):
    with pytest.raises(SettingsError) as raised:
        run_program({"alertEmails": emails})
    assert key in [problem.key for problem in raised.value.problems]
