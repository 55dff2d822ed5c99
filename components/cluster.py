"""AKS cluster (managed identity, AKS-managed Entra ID with Azure RBAC and no local accounts, OIDC
issuer, workload identity, Container Insights), an optional `jobs` node pool for MLflow run Jobs, the
Entra ID kubeconfig and the `kubernetes.Provider` every Kubernetes and Helm resource of the program uses.
The provider authenticates as the person running `pulumi up` (kubelogin, their `az login`). The stack's
operators (components/operators.py: config `operators`, or the first deployer) each get "Azure Kubernetes
Service RBAC Cluster Admin" on the cluster, or config `operatorsGroup` does instead; the runner is one of
them (the Operators ledger refuses anyone else), and the provider is ready once their access is."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_azuread as azuread
import pulumi_kubernetes as kubernetes
import yaml
from pulumi_azure_native import authorization, containerservice

from components import roles
from components.cluster_access import ClusterAccess, entra_kubeconfig
from components.naming import cluster_name

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
    tenant_id: pulumi.Input[str]
    """Entra ID tenant the cluster authenticates against (the deploying client's)."""
    subscription_id: pulumi.Input[str]
    """Subscription of the built-in role definitions."""
    runner_id: pulumi.Input[str]
    """Object id of whoever runs `pulumi up` this time: the access check waits for them."""
    first_deployer_id: pulumi.Input[str]
    """The stack's first deployer (the Operators ledger's, fixed): the one cluster admin when `operators`
    and `operators_group` are empty."""
    operators: Sequence[str]
    """Config `operators`: each gets AKS RBAC Cluster Admin (unless `operators_group`)."""
    operators_group: str | None
    """Config `operatorsGroup`: the one principal (a group) that gets the role, instead of each operator."""
    api_server_authorized_ip_ranges: tuple[str, ...]
    """CIDRs that may reach the API server; empty for no IP restriction (Entra ID still required)."""
    vnet_subnet_id: pulumi.Input[str] | None = None
    """Subnet of both node pools in the program's virtual network (`database: flexibleServer`, which the
    server is reached through); None: AKS's own network, as before."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """What the cluster is created after, and so deleted before: the public IP its load balancer holds
    (components/public_endpoint.py), which Azure cannot delete while the load balancer uses it."""


class Cluster(pulumi.ComponentResource):
    managed_cluster: containerservice.ManagedCluster
    jobs_pool: containerservice.AgentPool | None
    admin_assignments: list[authorization.RoleAssignment]
    """AKS RBAC Cluster Admin on the cluster: of the group, of each operator, or of the first deployer."""
    access: ClusterAccess
    """Exists once that role is effective; the provider depends on it."""
    provider: kubernetes.Provider
    cluster_name: pulumi.Output[str]
    cluster_id: pulumi.Output[str]
    oidc_issuer_url: pulumi.Output[str]
    identity_principal_id: pulumi.Output[str]
    """Principal of the cluster's (control-plane) system-assigned identity: it attaches Azure disks."""
    kubelet_object_id: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    """Entra ID kubeconfig (secret): kubelogin with the user's `az login`, no client certificate."""

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
        # A node pool's subnet is fixed at creation: AKS answers PropertyChangeNotAllowed to a new one
        # (Azure/AKS#695). So a cluster moving into the network is a new cluster, created after the old one
        # is deleted (its name is fixed). Without a network of our own nothing changes here.
        in_network = args.vnet_subnet_id is not None
        subnet = {"vnet_subnet_id": args.vnet_subnet_id} if in_network else {}

        self.managed_cluster = containerservice.ManagedCluster(
            f"{name}-aks",
            resource_name_=cluster_name(args.name_prefix),
            resource_group_name=args.resource_group_name,
            location=args.location,
            dns_prefix=args.name_prefix,
            kubernetes_version=args.kubernetes_version,
            identity=containerservice.ManagedClusterIdentityArgs(
                type=containerservice.ResourceIdentityType.SYSTEM_ASSIGNED,
            ),
            enable_rbac=True,
            # Entra ID sign-in, authorized by Azure role assignments: access is granted and revoked in
            # Azure, per person, and nobody holds a cluster credential that outlives its owner's account.
            aad_profile=containerservice.ManagedClusterAADProfileArgs(
                managed=True,
                enable_azure_rbac=True,
                tenant_id=args.tenant_id,
            ),
            # No static client certificates: listClusterAdminCredential is refused, and the only way in is
            # Entra ID (https://learn.microsoft.com/azure/aks/manage-local-accounts-managed-azure-ad).
            disable_local_accounts=True,
            # Empty: no IP restriction (Entra ID sign-in is still required). Sent also when empty, so that
            # removing the last range is a change Azure receives rather than an omitted property.
            api_server_access_profile=containerservice.ManagedClusterAPIServerAccessProfileArgs(
                authorized_ip_ranges=list(args.api_server_authorized_ip_ranges),
            ),
            oidc_issuer_profile=containerservice.ManagedClusterOIDCIssuerProfileArgs(enabled=True),
            security_profile=containerservice.ManagedClusterSecurityProfileArgs(
                workload_identity=containerservice.ManagedClusterSecurityProfileWorkloadIdentityArgs(
                    enabled=True,
                ),
            ),
            # Azure Monitor managed Prometheus: the metrics add-on scrapes the cluster and the platform's
            # pods into the workspace components/alerts.py declares, where the alert rules run.
            azure_monitor_profile=containerservice.ManagedClusterAzureMonitorProfileArgs(
                metrics=containerservice.ManagedClusterAzureMonitorProfileMetricsArgs(enabled=True),
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
                    **subnet,
                ),
            ],
            # With autoscaling, `count` only seeds the pool: the cluster autoscaler owns it afterwards, and
            # `pulumi up --refresh` would otherwise try to reset the pool to its first size.
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=args.depends_on,
                ignore_changes=[SYSTEM_POOL_COUNT_PATH] if args.system_node_autoscale else None,
                replace_on_changes=["agentPoolProfiles[*].vnetSubnetID"] if in_network else None,
                delete_before_replace=in_network or None,
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
                **subnet,
                # The autoscaler moves `count` between 0 and max as runs come and go: not drift. A new VM size
                # (like a new subnet) is a new pool, as AKS cannot change it in place
                # (https://learn.microsoft.com/azure/aks/manage-node-pools#limitations; azure-native replaces
                # the pool for it, pulumi/pulumi-azure-native#3655). Its name is fixed, so the old pool goes
                # first: run Jobs in flight stop and start again on the new nodes (nothing else runs there).
                opts=pulumi.ResourceOptions(
                    parent=self,
                    ignore_changes=["count"],
                    replace_on_changes=["vmSize", *(["vnetSubnetID"] if in_network else [])],
                    delete_before_replace=True,
                ),
            )

        # Operators install the Helm releases with their own Entra ID identity: Kubernetes admin through
        # Azure RBAC, on this cluster only. Each assignment's principal is named in config (or is the first
        # deployer the ledger keeps), never the caller, so a colleague's or CI's run changes none of them.
        self.admin_assignments = self._admin_assignments(name, args)

        # Azure's cluster-user kubeconfig gives the server and its CA; its user (a device-code login) is
        # replaced by kubelogin with the Azure CLI's login (components/cluster_access.py).
        credentials = containerservice.list_managed_cluster_user_credentials_output(
            resource_group_name=args.resource_group_name,
            resource_name=self.managed_cluster.name,
            format="exec",
        )
        azure_kubeconfig = credentials.kubeconfigs[0].value.apply(
            lambda encoded: base64.b64decode(encoded).decode()
        )
        self.kubeconfig = pulumi.Output.secret(azure_kubeconfig.apply(entra_kubeconfig))
        api_server = azure_kubeconfig.apply(lambda text: yaml.safe_load(text)["clusters"][0]["cluster"])

        # The role is seconds old here and takes minutes to become effective: the provider, and so every
        # Kubernetes and Helm resource, waits until the API server allows what the deployment does.
        self.access = ClusterAccess(
            f"{name}-access",
            server=api_server.apply(lambda cluster: cluster["server"]),
            certificate_authority_data=api_server.apply(
                lambda cluster: cluster.get("certificate-authority-data", "")
            ),
            principal_id=args.runner_id,
            # Any new or replaced assignment is a reason to check again.
            role_assignment_id=pulumi.Output.all(*(a.id for a in self.admin_assignments)).apply(
                lambda ids: ",".join(sorted(ids))
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.admin_assignments),
        )
        # No `delete_unreachable`: the provider calls the cluster unreachable on any failure to reach it (an
        # expired `az login`, an address outside apiServerAuthorizedIpRanges), and with it a `pulumi refresh`
        # would drop every release from the state while they keep running (pulumi/pulumi-kubernetes#1485,
        # #1522). A stack whose cluster is really gone is destroyed with PULUMI_K8S_DELETE_UNREACHABLE,
        # set for that one command (docs/operations.md, "When the cluster is already gone").
        self.provider = kubernetes.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.access]),
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

    def _admin_assignments(self, name: str, args: ClusterArgs) -> list[authorization.RoleAssignment]:
        def assign(
            resource_name: str, principal_id: pulumi.Input[str], **opts
        ) -> authorization.RoleAssignment:
            # A user or a CI service principal (or a group): Azure refuses an assignment whose principalType
            # does not match (UnmatchedPrincipalType, see hashicorp/terraform-provider-azurerm#4168), so
            # the type is read from Entra ID.
            principal = azuread.get_directory_object_output(object_id=principal_id)
            return roles.assign_role(
                resource_name,
                subscription_id=args.subscription_id,
                role=roles.AKS_RBAC_CLUSTER_ADMIN,
                principal_id=principal_id,
                scope=self.managed_cluster.id,
                parent=self,
                principal_type=principal.type,
                **opts,
            )

        first_deployer_name = f"{name}-deployer-cluster-admin"
        if args.operators_group:
            return [assign(f"{name}-operators-group-cluster-admin", args.operators_group)]
        if not args.operators:
            # The name stacks made before `operators` existed gave the deployer's: kept, so no change.
            return [assign(first_deployer_name, args.first_deployer_id)]
        # One per operator, named by object id: adding or removing one leaves the others alone. The first
        # listed takes over the first deployer's assignment when the list is first set (the ledger has it
        # listed first, if at all, so that no principal gets the role twice).
        return [
            assign(
                f"{name}-operator-{operator}-cluster-admin",
                operator,
                aliases=[pulumi.Alias(name=first_deployer_name)] if index == 0 else None,
            )
            for index, operator in enumerate(args.operators)
        ]
