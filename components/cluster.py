"""AKS cluster (managed identity, Kubernetes RBAC, OIDC issuer, workload identity, Container Insights),
an optional `jobs` node pool for MLflow run Jobs, the kubeconfig and the `kubernetes.Provider` every
Kubernetes and Helm resource of the program uses."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as kubernetes
from pulumi_azure_native import containerservice

SYSTEM_POOL_NAME = "system"
JOBS_POOL_NAME = "jobs"
# Run Jobs select the jobs pool with this label and tolerate this taint; nothing else lands there.
JOBS_POOL_LABEL = ("mlflow-aks/pool", "jobs")
JOBS_POOL_TAINT = "mlflow-aks/pool=jobs:NoSchedule"
# The system pool's node count inside the ManagedCluster's inputs (the autoscaler changes it).
SYSTEM_POOL_COUNT_PATH = "agentPoolProfiles[0].count"


@dataclass
class ClusterArgs:
    resource_group_name: pulumi.Input[str]
    """Resource group of the cluster (the platform group)."""
    location: str
    """Azure region."""
    name_prefix: str
    """Prefix of the cluster name and its DNS prefix."""
    kubernetes_version: str | None
    """AKS version, or None for the AKS default."""
    log_analytics_workspace_id: pulumi.Input[str]
    """Workspace the monitoring add-on sends container logs and metrics to."""
    system_node_vm_size: str
    """VM size of the system pool."""
    system_node_count: int
    """System node count when autoscaling is off."""
    system_node_autoscale: bool
    """Autoscale the system pool between min and max."""
    system_node_min_count: int
    """Minimum system nodes when autoscaling."""
    system_node_max_count: int
    """Maximum system nodes when autoscaling."""
    jobs_node_pool: bool
    """Add the tainted `jobs` pool that scales from 0 for run Jobs."""
    jobs_node_vm_size: str
    """VM size of the jobs pool."""
    jobs_node_max_count: int
    """Maximum nodes of the jobs pool."""


class Cluster(pulumi.ComponentResource):
    managed_cluster: containerservice.ManagedCluster
    jobs_pool: containerservice.AgentPool | None
    provider: kubernetes.Provider
    cluster_name: pulumi.Output[str]
    cluster_id: pulumi.Output[str]
    oidc_issuer_url: pulumi.Output[str]
    identity_principal_id: pulumi.Output[str]
    """Principal of the cluster's (control-plane) system-assigned identity: it attaches Azure disks."""
    kubelet_object_id: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    """Cluster-user kubeconfig (secret)."""

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:foundation:Cluster", name, None, opts)

        if args.system_node_autoscale:
            system_scale = {
                "enable_auto_scaling": True,
                "count": args.system_node_min_count,
                "min_count": args.system_node_min_count,
                "max_count": args.system_node_max_count,
            }
        else:
            system_scale = {"enable_auto_scaling": False, "count": args.system_node_count}

        self.managed_cluster = containerservice.ManagedCluster(
            f"{name}-aks",
            resource_name_=f"{args.name_prefix}-aks",
            resource_group_name=args.resource_group_name,
            location=args.location,
            dns_prefix=args.name_prefix,
            kubernetes_version=args.kubernetes_version,
            identity=containerservice.ManagedClusterIdentityArgs(
                type=containerservice.ResourceIdentityType.SYSTEM_ASSIGNED,
            ),
            enable_rbac=True,
            oidc_issuer_profile=containerservice.ManagedClusterOIDCIssuerProfileArgs(enabled=True),
            security_profile=containerservice.ManagedClusterSecurityProfileArgs(
                workload_identity=containerservice.ManagedClusterSecurityProfileWorkloadIdentityArgs(
                    enabled=True,
                ),
            ),
            addon_profiles={
                "omsagent": containerservice.ManagedClusterAddonProfileArgs(
                    enabled=True,
                    config={"logAnalyticsWorkspaceResourceID": args.log_analytics_workspace_id},
                ),
            },
            # Azure CNI overlay with the Cilium dataplane enforces the charts' NetworkPolicies.
            network_profile=containerservice.ContainerServiceNetworkProfileArgs(
                network_plugin=containerservice.NetworkPlugin.AZURE,
                network_plugin_mode=containerservice.NetworkPluginMode.OVERLAY,
                network_dataplane=containerservice.NetworkDataplane.CILIUM,
                network_policy=containerservice.NetworkPolicy.CILIUM,
            ),
            # No `availability_zones` on either pool, on purpose: the nodes are regional (non-zonal), and
            # the MySQL disk (components/database_disk.py) is created without a zone, which only attaches
            # to non-zonal nodes. Zonal pools would need a ZRS disk SKU (or a disk in the nodes' zone).
            agent_pool_profiles=[
                containerservice.ManagedClusterAgentPoolProfileArgs(
                    name=SYSTEM_POOL_NAME,
                    mode=containerservice.AgentPoolMode.SYSTEM,
                    type=containerservice.AgentPoolType.VIRTUAL_MACHINE_SCALE_SETS,
                    os_type=containerservice.OSType.LINUX,
                    vm_size=args.system_node_vm_size,
                    **system_scale,
                ),
            ],
            # With autoscaling, `count` only seeds the pool: the cluster autoscaler owns it afterwards, and
            # `pulumi up --refresh` would otherwise try to reset the pool to its first size.
            opts=pulumi.ResourceOptions(
                parent=self,
                ignore_changes=[SYSTEM_POOL_COUNT_PATH] if args.system_node_autoscale else None,
            ),
        )

        self.jobs_pool = None
        if args.jobs_node_pool:
            label_key, label_value = JOBS_POOL_LABEL
            self.jobs_pool = containerservice.AgentPool(
                f"{name}-jobs-pool",
                agent_pool_name=JOBS_POOL_NAME,
                resource_group_name=args.resource_group_name,
                resource_name_=self.managed_cluster.name,
                mode=containerservice.AgentPoolMode.USER,
                type=containerservice.AgentPoolType.VIRTUAL_MACHINE_SCALE_SETS,
                os_type=containerservice.OSType.LINUX,
                vm_size=args.jobs_node_vm_size,
                orchestrator_version=args.kubernetes_version,
                # Scales to zero when no run is active, so idle compute costs nothing.
                enable_auto_scaling=True,
                count=0,
                min_count=0,
                max_count=args.jobs_node_max_count,
                node_labels={label_key: label_value},
                node_taints=[JOBS_POOL_TAINT],
                # The autoscaler moves `count` between 0 and max as runs come and go: not drift.
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=["count"]),
            )

        credentials = containerservice.list_managed_cluster_user_credentials_output(
            resource_group_name=args.resource_group_name,
            resource_name=self.managed_cluster.name,
        )
        self.kubeconfig = pulumi.Output.secret(
            credentials.kubeconfigs[0].value.apply(lambda encoded: base64.b64decode(encoded).decode())
        )
        self.provider = kubernetes.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            # Lets `pulumi destroy` finish when the cluster is already gone.
            delete_unreachable=True,
            opts=pulumi.ResourceOptions(parent=self),
        )

        self.cluster_name = self.managed_cluster.name
        self.cluster_id = self.managed_cluster.id
        self.oidc_issuer_url = self.managed_cluster.oidc_issuer_profile.apply(
            lambda profile: profile.issuer_url if profile else None
        )
        self.identity_principal_id = self.managed_cluster.identity.apply(
            lambda identity: identity.principal_id if identity else None
        )
        self.kubelet_object_id = self.managed_cluster.identity_profile.apply(
            lambda identities: identities["kubeletidentity"].object_id if identities else None
        )

        self.register_outputs(
            {
                "clusterName": self.cluster_name,
                "clusterId": self.cluster_id,
                "oidcIssuerUrl": self.oidc_issuer_url,
                "identityPrincipalId": self.identity_principal_id,
                "kubeletObjectId": self.kubelet_object_id,
                "kubeconfig": self.kubeconfig,
            }
        )
