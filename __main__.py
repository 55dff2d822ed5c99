"""mlflow-aks: reads the stack settings, wires the components together and exports what users need."""

import pulumi
from pulumi_azure_native import authorization

from components import chart_values, roles
from components.alerts import Alerts, AlertsArgs
from components.certificate_share import CertificateShare, CertificateShareArgs
from components.cluster import JOBS_POOL_LABEL, JOBS_POOL_TAINT, SYSTEM_POOL_NAME, Cluster, ClusterArgs
from components.cluster_access import require_tools
from components.data_guard import DataGuard, DataIdentity
from components.database_disk import DatabaseDisk, DatabaseDiskArgs
from components.database_server import DatabaseServer, DatabaseServerArgs
from components.deployer import Deployer, DeployerArgs
from components.deployer_address import require_api_server_reach
from components.images import Images, ImagesArgs
from components.in_place_guard import AzureNames, GuardedValues, InPlaceGuard
from components.kept_data import AdoptedServer, KeptData
from components.mlflow_releases import (
    PROJECT_CHART,
    FlexibleServerConnection,
    MlflowReleases,
    MlflowReleasesArgs,
)
from components.monitoring import Monitoring, MonitoringArgs
from components.naming import (
    backup_identity_name,
    cluster_name,
    data_group_name,
    mysql_disk_name,
    mysql_server_name,
    platform_group_name,
    tracking_identity_name,
)
from components.operators import Operators
from components.private_network import PrivateNetwork, PrivateNetworkArgs
from components.project_share import ProjectShare, ProjectShareArgs
from components.public_endpoint import PublicEndpoint, PublicEndpointArgs
from components.registry import Registry, RegistryArgs
from components.resource_groups import ResourceGroups, ResourceGroupsArgs
from components.sign_in import SignIn, SignInArgs
from components.storage import Storage, StorageArgs
from components.workload_identity import RoleGrant, WorkloadIdentity, WorkloadIdentityArgs
from settings import load_settings

settings = load_settings()
# The Kubernetes provider signs in through kubelogin and az: without them, stop before creating anything.
require_tools()
# Nor from outside the API server's authorized ranges, which it would only find out once the cluster exists.
require_api_server_reach(settings.api_server_authorized_ip_ranges, settings.deployer_ip_address)
client = authorization.get_client_config_output()
kept_data = (
    KeptData.in_current_subscription(settings.name_prefix, settings.data_storage_account)
    if settings.data_storage_account
    else None
)

# Who may run `pulumi up`, own the Entra ID applications and administer the cluster; remembers the first
# deployer. Before anything else: a run by someone who is not an operator stops here.
operators = Operators("operators", caller=client.object_id, operators=settings.operators)
# First, and everything else depends on it: a config change that would replace the data stops here.
data_guard = DataGuard(
    "data-guard",
    identity=DataIdentity(
        namePrefix=settings.name_prefix,
        location=settings.location,
        dataStorageAccount=settings.data_storage_account or "",
        dataResourceGroup=data_group_name(settings.name_prefix),
        mysqlDisk=mysql_disk_name(settings.name_prefix),
        database=settings.database,
        databaseServerName=settings.database_server_name or "",
    ),
    allow_replacement=settings.allow_data_replacement,
    opts=pulumi.ResourceOptions(depends_on=[operators]),
)
# Right after it, and everything else waits for both: a change Azure cannot make in place stops here.
in_place_guard = InPlaceGuard(
    "in-place-guard",
    values=GuardedValues(
        systemNodeVmSize=settings.system_node_vm_size,
        mysqlDiskSku=None if settings.flexible_server else settings.mysql_disk_sku,
    ),
    names=AzureNames(
        platform_group=platform_group_name(settings.name_prefix),
        cluster=cluster_name(settings.name_prefix),
        system_pool=SYSTEM_POOL_NAME,
        data_group=data_group_name(settings.name_prefix),
        mysql_disk=mysql_disk_name(settings.name_prefix),
    ),
    subscription_id=client.subscription_id,
    opts=pulumi.ResourceOptions(depends_on=[data_guard]),
)
guards = [data_guard, in_place_guard]
groups = ResourceGroups(
    "groups",
    ResourceGroupsArgs(
        location=settings.location,
        name_prefix=settings.name_prefix,
        retain_data=settings.retain_data,
        protect_data=settings.protect_data,
        kept_data=kept_data,
        depends_on=guards,
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
# `database: flexibleServer`: the network the cluster and the server share, kept with the data.
private_network = (
    PrivateNetwork(
        "private-network",
        PrivateNetworkArgs(
            resource_group_name=groups.data_name,
            location=settings.location,
            name_prefix=settings.name_prefix,
            retain_on_delete=settings.retain_data,
            protect=settings.protect_data,
            kept_data=kept_data,
            depends_on=[groups.data_lock] if groups.data_lock else [],
        ),
    )
    if settings.flexible_server
    else None
)
# The public address (and DNS name) exists before the cluster, whose load balancer takes it, and outlives it.
public_endpoint = (
    PublicEndpoint(
        "public-endpoint",
        PublicEndpointArgs(
            resource_group_name=groups.platform_name,
            location=settings.location,
            name_prefix=settings.name_prefix,
        ),
    )
    if settings.exposure == "public"
    else None
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
        tenant_id=client.tenant_id,
        subscription_id=client.subscription_id,
        runner_id=client.object_id,
        first_deployer_id=operators.first_deployer,
        operators=settings.operators,
        operators_group=settings.operators_group,
        api_server_authorized_ip_ranges=settings.api_server_authorized_ip_ranges,
        vnet_subnet_id=private_network.cluster_subnet_id if private_network else None,
        depends_on=[public_endpoint.address] if public_endpoint else [],
    ),
)
# The alert rules of alerts/rules.yaml on the cluster's managed Prometheus; they mail config alertEmails.
alerts = Alerts(
    "alerts",
    AlertsArgs(
        resource_group_name=groups.platform_name,
        location=settings.location,
        name_prefix=settings.name_prefix,
        cluster_id=cluster.cluster_id,
        cluster_name=cluster.cluster_name,
        provider=cluster.provider,
        namespace=settings.namespace,
        emails=settings.alert_emails,
        in_cluster_database=not settings.flexible_server,
    ),
)
if private_network:
    private_network.grant_cluster(
        subscription_id=client.subscription_id, cluster_principal_id=cluster.identity_principal_id
    )
if public_endpoint:
    public_endpoint.grant_cluster(
        subscription_id=client.subscription_id,
        resource_group_id=groups.platform.id,
        cluster_principal_id=cluster.identity_principal_id,
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
        password_lifetime_days=settings.deployer_password_lifetime_days,
        subscription_id=client.subscription_id,
        registry_id=registry.registry_id,
        owners=operators.owners,
        depends_on=guards,
    ),
)
# `auth: entra`: the Entra ID application people and scripts sign in with.
sign_in = (
    SignIn(
        "sign-in",
        SignInArgs(
            name_prefix=settings.name_prefix,
            secret_lifetime_days=settings.sign_in_secret_lifetime_days,
            owners=operators.owners,
            public_hostname=public_endpoint.hostname if public_endpoint else None,
            depends_on=guards,
        ),
    )
    if settings.entra_sign_in
    else None
)
storage = Storage(
    "storage",
    StorageArgs(
        resource_group_name=groups.data_name,
        location=settings.location,
        name_prefix=settings.name_prefix,
        sku=settings.storage_sku,
        retain_on_delete=settings.retain_data,
        protect=settings.protect_data,
        kept_data=kept_data,
        backup_retention_days=settings.backup_retention_days,
        soft_delete_retention_days=settings.soft_delete_retention_days,
        depends_on=[groups.data_lock] if groups.data_lock else [],
    ),
)
# Not data: mlflow_project/ is uploaded again on every `pulumi up`, so the share goes with the platform.
project_share = ProjectShare(
    "projects",
    ProjectShareArgs(
        resource_group_name=groups.platform_name,
        location=settings.location,
        name_prefix=settings.name_prefix,
        sku=settings.storage_sku,
        quota_gib=settings.file_share_quota_gib,
    ),
)
# Not data either, but kept from one release to the next: the public endpoint's certificate.
certificate_share = CertificateShare(
    "certificates",
    CertificateShareArgs(
        resource_group_name=groups.platform_name,
        location=settings.location,
        name_prefix=settings.name_prefix,
        sku=settings.storage_sku,
    ),
)
mysql_disk = (
    DatabaseDisk(
        "mysql-disk",
        DatabaseDiskArgs(
            resource_group_name=groups.data_name,
            location=settings.location,
            name_prefix=settings.name_prefix,
            sku=settings.mysql_disk_sku,
            size_gib=settings.mysql_disk_size_gib,
            retain_on_delete=settings.retain_data,
            protect=settings.protect_data,
            kept_data=kept_data,
            subscription_id=client.subscription_id,
            cluster_principal_id=cluster.identity_principal_id,
            # Only a disk Pulumi deletes waits for the cluster: `--exclude-protected` would keep the cluster.
            depends_on=[] if settings.retain_data else [cluster.managed_cluster],
        ),
    )
    if not settings.flexible_server
    else None
)
database_server = None
if private_network:
    # A server restored from the stack's (databaseServerName) or the kept one is imported, not created.
    adopted = kept_data.mysql_server() if kept_data else None
    if settings.database_server_name:
        adopted = AdoptedServer.in_current_subscription(settings.name_prefix, settings.database_server_name)
    database_server = DatabaseServer(
        "mysql-server",
        DatabaseServerArgs(
            resource_group_name=groups.data_name,
            location=settings.location,
            server_name=settings.database_server_name
            or storage.account_name.apply(lambda account: mysql_server_name(settings.name_prefix, account)),
            sku=settings.database_sku,
            tier=settings.database_tier,
            high_availability=settings.database_high_availability,
            geo_redundant_backup=settings.database_geo_redundant_backup,
            backup_retention_days=settings.database_backup_retention_days,
            delegated_subnet_id=private_network.database_subnet_id,
            private_dns_zone_id=private_network.dns_zone_id,
            retain_on_delete=settings.retain_data,
            protect=settings.protect_data,
            adopted=adopted,
            depends_on=[private_network.dns_zone_link, *([groups.data_lock] if groups.data_lock else [])],
        ),
    )
# The server (and gc) reach the artifacts, the backup Job the backups; neither reaches the other's.
tracking_identity = WorkloadIdentity(
    "tracking-identity",
    WorkloadIdentityArgs(
        resource_group_name=groups.platform_name,
        location=settings.location,
        identity_name=tracking_identity_name(settings.name_prefix),
        oidc_issuer_url=cluster.oidc_issuer_url,
        subject=settings.tracking_identity_subject,
        subscription_id=client.subscription_id,
        grants=[
            RoleGrant("blob-data-contributor", roles.STORAGE_BLOB_DATA_CONTRIBUTOR, storage.container_id)
        ],
        data_locked=groups.data_lock is not None,
    ),
    # Still the identity of stacks made when this was a TrackingIdentity component: not replaced, client id
    # kept; the engine carries a component's alias to its children
    # (https://www.pulumi.com/docs/iac/concepts/resources/options/aliases/).
    opts=pulumi.ResourceOptions(aliases=[pulumi.Alias(type_="mlflow-aks:foundation:TrackingIdentity")]),
)
backup_identity = WorkloadIdentity(
    "backup-identity",
    WorkloadIdentityArgs(
        resource_group_name=groups.platform_name,
        location=settings.location,
        identity_name=backup_identity_name(settings.name_prefix),
        oidc_issuer_url=cluster.oidc_issuer_url,
        subject=settings.backup_identity_subject,
        subscription_id=client.subscription_id,
        grants=[
            RoleGrant(
                "backups-data-contributor", roles.STORAGE_BLOB_DATA_CONTRIBUTOR, storage.backups_container_id
            )
        ],
        data_locked=groups.data_lock is not None,
    ),
)

images = Images(
    "images",
    ImagesArgs(
        login_server=registry.login_server,
        username=deployer.client_id,
        password=deployer.password,
        push_permissions=deployer.role_assignments,
    ),
)
mlflow = MlflowReleases(
    "mlflow",
    MlflowReleasesArgs(
        provider=cluster.provider,
        namespace=settings.namespace,
        runs_namespace=settings.runs_namespace,
        exposure=settings.exposure,
        allowed_source_ranges=settings.allowed_source_ranges,
        tracking_replicas=settings.tracking_replicas,
        largest_artifact_mib=settings.largest_artifact_mib,
        tracking_service_account=settings.tracking_service_account,
        admin_username=settings.admin_username,
        runs=settings.runs,
        acr_login_server=registry.login_server,
        tracking_image=images.tracking_server_ref,
        project_image=images.project_ref,
        mysql_image=images.mysql_ref,
        tls_image=images.tls_proxy_ref,
        public_endpoint=public_endpoint,
        acme_directory=settings.acme_directory,
        default_permission=settings.default_permission,
        sign_in=sign_in,
        allowed_groups=settings.entra_allowed_groups,
        admin_groups=settings.entra_admin_groups,
        run_token_issuer=cluster.oidc_issuer_url,
        tracking_identity_client_id=tracking_identity.client_id,
        backup_identity_client_id=backup_identity.client_id,
        storage_account=storage.account_name,
        artifacts_container=storage.container_name,
        backups_container=storage.backups_container_name,
        backup_schedule=settings.backup_schedule,
        binlog_ship_minutes=settings.binlog_ship_minutes,
        kek_version=settings.kek_version,
        telemetry=settings.mlflow_telemetry,
        server_jobs=settings.server_jobs,
        llm_provider_cidrs=settings.llm_provider_cidrs,
        gc_schedule=settings.gc_schedule,
        gc_older_than=settings.gc_older_than,
        projects_account=project_share.account_name,
        projects_resource_group=groups.platform_name,
        projects_share=project_share.share_name,
        projects_account_key=project_share.account_key,
        mysql_disk_id=mysql_disk.disk_id if mysql_disk else None,
        mysql_disk_size_gib=settings.mysql_disk_size_gib,
        certificate_share=certificate_share,
        flexible_server=FlexibleServerConnection(
            host=database_server.host,
            user=database_server.admin_login,
            password=database_server.admin_password_value,
            server_name=database_server.server_name,
            resource_group=groups.data_name,
            network_cidr=private_network.database_subnet_prefix,
        )
        if database_server and private_network
        else None,
        jobs_pool_label=JOBS_POOL_LABEL if settings.jobs_node_pool else None,
        jobs_pool_taint=JOBS_POOL_TAINT if settings.jobs_node_pool else None,
        run_depends_on=[cluster.jobs_pool] if cluster.jobs_pool else [],
        depends_on=[
            registry.kubelet_pull,
            tracking_identity.federated_credential,
            *tracking_identity.role_assignments,
            backup_identity.federated_credential,
            *backup_identity.role_assignments,
            # The backup Job writes only once the backups are write-once.
            storage.backups_retention,
            *([mysql_disk.attach_access] if mysql_disk else []),
            # The server, its TLS setting and databases, the admin password in force, the nodes' subnet.
            *(
                [
                    database_server.secure_transport,
                    *database_server.databases.values(),
                    *([database_server.password_reset] if database_server.password_reset else []),
                ]
                if database_server
                else []
            ),
            *([private_network.cluster_access] if private_network and private_network.cluster_access else []),
            # The load balancer takes the public IP only once the cluster identity may join it.
            *([public_endpoint.join_access] if public_endpoint and public_endpoint.join_access else []),
        ],
    ),
)

pulumi.export("platformResourceGroup", groups.platform_name)
pulumi.export("dataResourceGroup", groups.data_name)
pulumi.export("clusterName", cluster.cluster_name)
pulumi.export("kubeconfig", pulumi.Output.secret(cluster.kubeconfig))
pulumi.export("acrLoginServer", registry.login_server)
pulumi.export("storageAccount", storage.account_name)
pulumi.export("artifactsContainer", storage.container_name)
pulumi.export("projectsStorageAccount", project_share.account_name)
pulumi.export("projectsShare", project_share.share_name)
pulumi.export("certificatesStorageAccount", certificate_share.account_name)
if mysql_disk:
    pulumi.export("mysqlDiskId", mysql_disk.disk_id)
if database_server:  # what `az mysql flexible-server restore --source-server` names; nothing secret
    pulumi.export("databaseServer", database_server.server_name)
    pulumi.export("databaseHost", database_server.host)
pulumi.export("deployerClientId", deployer.client_id)
if settings.export_deployer_password:  # off by default: the password stays inside the stack
    pulumi.export("deployerPassword", pulumi.Output.secret(deployer.password))
pulumi.export("trackingIdentityClientId", tracking_identity.client_id)
pulumi.export("backupIdentityClientId", backup_identity.client_id)
pulumi.export("tenantId", client.tenant_id)
# Who owns the Entra ID applications (every operator the stack has had) and who deployed it first.
pulumi.export("owners", operators.owners)
pulumi.export("firstDeployer", operators.first_deployer)
pulumi.export("namespace", settings.namespace)
pulumi.export("runsNamespace", settings.runs_namespace)
pulumi.export("trackingUrl", mlflow.tracking_url)
if settings.exposure == "private":
    pulumi.export(
        "portForward",
        f"kubectl --namespace {settings.namespace} port-forward service/{chart_values.TRACKING_SERVICE} "
        f"{chart_values.PORT_FORWARD_PORT}:{chart_values.TRACKING_SERVICE_PORT}",
    )
if sign_in:  # what `az account get-access-token --scope <signInScope>` needs; nothing secret
    pulumi.export("signInClientId", sign_in.client_id)
    pulumi.export("signInScope", sign_in.scope)
pulumi.export("adminUser", settings.admin_username)
pulumi.export("adminPassword", pulumi.Output.secret(mlflow.admin_password))
pulumi.export("trackingServerImage", images.tracking_server_ref)
pulumi.export("projectImage", images.project_ref)
pulumi.export("mysqlImage", images.mysql_ref)
pulumi.export("runs", list(mlflow.runs))
# One more run by hand:
# `helm install <name> charts/mlflow_project -n <runsNamespace> -f <runValues> --set run.…`
pulumi.export("runChart", PROJECT_CHART)
pulumi.export("runValues", mlflow.run_values)
