"""Alerts that reach a person: Azure Monitor managed Prometheus for the cluster, the platform's alert rules
(alerts/rules.yaml) as Prometheus rule groups on its Azure Monitor workspace, and an action group that
mails config `alertEmails`.

Managed Prometheus is wired as Azure documents it for ARM/Bicep
(https://learn.microsoft.com/azure/azure-monitor/containers/kubernetes-monitoring-enable?tabs=arm): an
Azure Monitor workspace, a data collection endpoint and a data collection rule forwarding
`Microsoft-PrometheusMetrics` to the workspace, the rule associated with the cluster (and the endpoint as
its `configurationAccessEndpoint`), and the cluster's `azureMonitorProfile.metrics` on
(components/cluster.py).
The add-on's settings ConfigMap turns on the scraping of the platform's annotated pods and keeps the one
kube-state-metrics series the rules read that the minimal ingestion profile drops (`kube_job_status_failed`,
https://learn.microsoft.com/azure/azure-monitor/containers/prometheus-metrics-scrape-configuration-minimal).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as kubernetes
from pulumi_azure_native import alertsmanagement, monitor

import alerts as alert_rules

# The rule group about the in-cluster MySQL (backups, binary logs, disk).
DATABASE_GROUP = "mlflow-aks-database"
# kube-state-metrics series the rules need beyond the minimal ingestion profile's keep list.
EXTRA_KUBE_STATE_METRICS = ("kube_job_status_failed",)
SETTINGS_CONFIGMAP = "ama-metrics-settings-configmap"
# Azure evaluates every rule group this often (ISO 8601, 1 to 15 minutes).
EVALUATION_INTERVAL = "PT1M"
# A resolved alert mails again (Azure: "resolved") once its condition has been false this long.
TIME_TO_RESOLVE = "PT10M"


@dataclass
class AlertsArgs:
    resource_group_name: pulumi.Input[str]
    """Resource group of the workspace, the data collection resources, the rule groups (the platform's)."""
    location: str
    """Azure region (rule groups live in their workspace's region)."""
    name_prefix: str
    """Prefix of every resource name."""
    cluster_id: pulumi.Input[str]
    """The AKS cluster whose metrics are collected and whose data the rules read."""
    cluster_name: pulumi.Input[str]
    """Its name (rule groups are scoped to it)."""
    provider: kubernetes.Provider
    """The cluster's provider, for the metrics add-on's settings ConfigMap."""
    namespace: str
    """The platform's namespace: its annotated pods (the tracking server) are scraped."""
    emails: tuple[str, ...]
    """Who is mailed when an alert fires and resolves (config alertEmails); empty: nobody."""
    in_cluster_database: bool = True
    """MySQL runs in the cluster (backed up by the chart's Jobs, on its own disk); False: a flexible server,
    whose backups and storage Azure keeps, so the `DATABASE_GROUP` rules are left out."""
    rules_file: Path = alert_rules.RULES_FILE
    """The Prometheus rule file the rule groups are made from."""


def _rule(rule: dict, action_group_id: pulumi.Input[str]) -> alertsmanagement.PrometheusRuleArgs:
    return alertsmanagement.PrometheusRuleArgs(
        alert=rule["alert"],
        expression=" ".join(rule["expr"].split()),
        for_=alert_rules.azure_duration(rule["for"]) if "for" in rule else None,
        labels=rule.get("labels", {}),
        annotations=rule.get("annotations", {}),
        severity=alert_rules.azure_severity(rule),
        enabled=True,
        actions=[alertsmanagement.PrometheusRuleGroupActionArgs(action_group_id=action_group_id)],
        resolve_configuration=alertsmanagement.PrometheusRuleResolveConfigurationArgs(
            auto_resolved=True, time_to_resolve=TIME_TO_RESOLVE
        ),
    )


def metrics_settings(namespace: str) -> dict[str, str]:
    """The add-on's settings (Microsoft's template: Azure/prometheus-collector,
    otelcollector/configmaps/ama-metrics-settings-configmap.yaml), only the keys the platform sets."""
    return {
        "schema-version": "v1",
        "config-version": "mlflow-aks",
        "pod-annotation-based-scraping": f'podannotationnamespaceregex = "{namespace}"',
        "default-targets-metrics-keep-list": (
            f'kubestate = "{"|".join(EXTRA_KUBE_STATE_METRICS)}"\nminimalingestionprofile = true'
        ),
    }


class Alerts(pulumi.ComponentResource):
    workspace: monitor.AzureMonitorWorkspace
    collection_endpoint: monitor.DataCollectionEndpoint
    collection_rule: monitor.DataCollectionRule
    rule_association: monitor.DataCollectionRuleAssociation
    endpoint_association: monitor.DataCollectionRuleAssociation
    action_group: monitor.ActionGroup
    rule_groups: list[alertsmanagement.PrometheusRuleGroup]
    metrics_settings_map: kubernetes.core.v1.ConfigMap
    workspace_id: pulumi.Output[str]
    action_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: AlertsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:monitoring:Alerts", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.workspace = monitor.AzureMonitorWorkspace(
            f"{name}-workspace",
            azure_monitor_workspace_name=f"{args.name_prefix}-prometheus",
            resource_group_name=args.resource_group_name,
            location=args.location,
            opts=child,
        )
        self.collection_endpoint = monitor.DataCollectionEndpoint(
            f"{name}-endpoint",
            data_collection_endpoint_name=f"{args.name_prefix}-prometheus",
            resource_group_name=args.resource_group_name,
            location=args.location,
            kind="Linux",
            opts=child,
        )
        self.collection_rule = monitor.DataCollectionRule(
            f"{name}-collection-rule",
            data_collection_rule_name=f"{args.name_prefix}-prometheus",
            resource_group_name=args.resource_group_name,
            location=args.location,
            kind="Linux",
            data_collection_endpoint_id=self.collection_endpoint.id,
            data_sources=monitor.DataCollectionRuleDataSourcesArgs(
                prometheus_forwarder=[
                    monitor.PrometheusForwarderDataSourceArgs(
                        name="PrometheusDataSource", streams=["Microsoft-PrometheusMetrics"]
                    )
                ]
            ),
            destinations=monitor.DataCollectionRuleDestinationsArgs(
                monitoring_accounts=[
                    monitor.MonitoringAccountDestinationArgs(
                        name="MonitoringAccount1", account_resource_id=self.workspace.id
                    )
                ]
            ),
            data_flows=[
                monitor.DataFlowArgs(
                    streams=["Microsoft-PrometheusMetrics"], destinations=["MonitoringAccount1"]
                )
            ],
            opts=child,
        )
        # The names Azure's own enablement gives the two associations.
        self.rule_association = monitor.DataCollectionRuleAssociation(
            f"{name}-rule-association",
            association_name="ContainerInsightsMetricsExtension",
            resource_uri=args.cluster_id,
            data_collection_rule_id=self.collection_rule.id,
            opts=child,
        )
        self.endpoint_association = monitor.DataCollectionRuleAssociation(
            f"{name}-endpoint-association",
            association_name="configurationAccessEndpoint",
            resource_uri=args.cluster_id,
            data_collection_endpoint_id=self.collection_endpoint.id,
            opts=child,
        )
        if not args.emails:
            pulumi.log.warn(
                "alertEmails is empty: the alerts are evaluated and shown in the Azure portal, but nobody is "
                "mailed. `pulumi config set --path 'alertEmails[0]' oncall@example.com`",
                resource=self,
            )
        # Action groups are global (https://learn.microsoft.com/azure/azure-monitor/alerts/action-groups).
        self.action_group = monitor.ActionGroup(
            f"{name}-action-group",
            action_group_name=f"{args.name_prefix}-alerts",
            group_short_name=f"{args.name_prefix}-alert"[:12],
            resource_group_name=args.resource_group_name,
            location="Global",
            enabled=True,
            email_receivers=[
                monitor.MicrosoftCommonEmailReceiverArgs(
                    name=f"email-{index}", email_address=email, use_common_alert_schema=True
                )
                for index, email in enumerate(args.emails)
            ],
            opts=child,
        )
        # Scoped to the workspace and the cluster, as Azure's own rule groups for AKS are
        # (https://learn.microsoft.com/azure/azure-monitor/essentials/prometheus-rule-groups).
        self.rule_groups = [
            alertsmanagement.PrometheusRuleGroup(
                f"{name}-{group['name']}",
                rule_group_name=f"{args.name_prefix}-{group['name']}",
                resource_group_name=args.resource_group_name,
                location=args.location,
                cluster_name=args.cluster_name,
                scopes=[self.workspace.id, args.cluster_id],
                enabled=True,
                interval=EVALUATION_INTERVAL,
                description=f"mlflow-aks alerts ({group['name']}), from alerts/rules.yaml",
                rules=[_rule(rule, self.action_group.id) for rule in group["rules"]],
                opts=child,
            )
            for group in alert_rules.groups(args.rules_file)
            if args.in_cluster_database or group["name"] != DATABASE_GROUP
        ]
        # Server-side apply upserts: a ConfigMap someone created by hand is taken over, not a conflict
        # (https://www.pulumi.com/registry/packages/kubernetes/how-to-guides/managing-resources-with-server-side-apply/).
        self.metrics_settings_map = kubernetes.core.v1.ConfigMap(
            f"{name}-metrics-settings",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=SETTINGS_CONFIGMAP,
                namespace="kube-system",
                annotations={"pulumi.com/patchForce": "true"},
            ),
            data=metrics_settings(args.namespace),
            opts=pulumi.ResourceOptions(parent=self, provider=args.provider),
        )

        self.workspace_id = self.workspace.id
        self.action_group_id = self.action_group.id
        self.register_outputs({"workspaceId": self.workspace_id, "actionGroupId": self.action_group_id})
