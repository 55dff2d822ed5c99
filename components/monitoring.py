"""Log Analytics workspace that the AKS monitoring add-on (Container Insights) sends to."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_azure_native import operationalinsights


@dataclass
class MonitoringArgs:
    resource_group_name: pulumi.Input[str]
    """Resource group of the workspace (the platform group)."""
    location: str
    """Azure region."""
    name_prefix: str
    """Prefix of the workspace name."""
    retention_days: int
    """How long logs are kept (30-730 days)."""


class Monitoring(pulumi.ComponentResource):
    workspace: operationalinsights.Workspace
    workspace_id: pulumi.Output[str]

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:foundation:Monitoring", name, None, opts)

        self.workspace = operationalinsights.Workspace(
            f"{name}-workspace",
            workspace_name=f"{args.name_prefix}-logs",
            resource_group_name=args.resource_group_name,
            location=args.location,
            sku=operationalinsights.WorkspaceSkuArgs(
                name=operationalinsights.WorkspaceSkuNameEnum.PER_GB2018
            ),
            retention_in_days=args.retention_days,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.workspace_id = self.workspace.id

        self.register_outputs({"workspaceId": self.workspace_id})
