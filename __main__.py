"""mlflow-aks: reads the stack settings, wires the components together and exports what users need."""

import pulumi
from pulumi_azure_native import authorization

from components.cluster import Cluster, ClusterArgs
from components.deployer import Deployer, DeployerArgs
from components.monitoring import Monitoring, MonitoringArgs
from components.registry import Registry, RegistryArgs
from components.resource_groups import ResourceGroups, ResourceGroupsArgs
from components.storage import Storage, StorageArgs
from components.tracking_identity import TrackingIdentity, TrackingIdentityArgs
from settings import load_settings

settings = load_settings()
client = authorization.get_client_config_output()

groups = ResourceGroups(
    "groups",
    ResourceGroupsArgs(
        location=settings.location, name_prefix=settings.name_prefix, retain_data=settings.retain_data
    ),
)
monitoring = Monitoring(
    "monitoring",
    MonitoringArgs(
        resource_group_name=groups.platform_name,
        location=settings.location,
        name_prefix=settings.name_prefix,
        retention_days=settings.log_retention_days,
    ),
)
cluster = Cluster(
    "cluster",
    ClusterArgs(
        resource_group_name=groups.platform_name,
        location=settings.location,
        name_prefix=settings.name_prefix,
        kubernetes_version=settings.kubernetes_version,
        log_analytics_workspace_id=monitoring.workspace_id,
        system_node_vm_size=settings.system_node_vm_size,
        system_node_count=settings.system_node_count,
        system_node_autoscale=settings.system_node_autoscale,
        system_node_min_count=settings.system_node_min_count,
        system_node_max_count=settings.system_node_max_count,
        jobs_node_pool=settings.jobs_node_pool,
        jobs_node_vm_size=settings.jobs_node_vm_size,
        jobs_node_max_count=settings.jobs_node_max_count,
    ),
)
registry = Registry(
    "registry",
    RegistryArgs(
        resource_group_name=groups.platform_name,
        location=settings.location,
        name_prefix=settings.name_prefix,
        sku=settings.acr_sku,
        subscription_id=client.subscription_id,
        kubelet_object_id=cluster.kubelet_object_id,
    ),
)
deployer = Deployer(
    "deployer",
    DeployerArgs(
        name_prefix=settings.name_prefix,
        password_end_date=settings.deployer_password_end_date,
        subscription_id=client.subscription_id,
        registry_id=registry.registry_id,
        cluster_id=cluster.cluster_id,
    ),
)
storage = Storage(
    "storage",
    StorageArgs(
        resource_group_name=groups.data_name,
        location=settings.location,
        name_prefix=settings.name_prefix,
        sku=settings.storage_sku,
        file_share_quota_gib=settings.file_share_quota_gib,
        retain_on_delete=settings.retain_data,
    ),
)
tracking_identity = TrackingIdentity(
    "tracking-identity",
    TrackingIdentityArgs(
        resource_group_name=groups.platform_name,
        location=settings.location,
        name_prefix=settings.name_prefix,
        oidc_issuer_url=cluster.oidc_issuer_url,
        subject=settings.tracking_identity_subject,
        subscription_id=client.subscription_id,
        artifacts_container_id=storage.container_id,
    ),
)

pulumi.export("platformResourceGroup", groups.platform_name)
pulumi.export("dataResourceGroup", groups.data_name)
pulumi.export("clusterName", cluster.cluster_name)
pulumi.export("kubeconfig", pulumi.Output.secret(cluster.kubeconfig))
pulumi.export("acrLoginServer", registry.login_server)
pulumi.export("storageAccount", storage.account_name)
pulumi.export("artifactsContainer", storage.container_name)
pulumi.export("projectsShare", storage.share_name)
pulumi.export("deployerClientId", deployer.client_id)
pulumi.export("deployerPassword", pulumi.Output.secret(deployer.password))
pulumi.export("trackingIdentityClientId", tracking_identity.client_id)
pulumi.export("tenantId", client.tenant_id)
