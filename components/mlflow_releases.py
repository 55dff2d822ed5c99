"""MLflow on the cluster: the namespace, generated secrets, the project files on the share, the
`mlflow_setup` Helm release (tracking server + MySQL, or the flexible server's connection, + project
volume) and one `mlflow_project` release per configured run.

Helm values come from components/chart_values.py (jinja2 templates in templates/) fed with resolved
stack outputs inside `Output.all(...).apply(...)`; values holding a secret stay Pulumi secrets and no
values file is written anywhere.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as kubernetes
import pulumi_random as random
import yaml

from components import chart_values
from components.certificate_share import CertificateShare
from components.certificate_volume import CertificateVolume, CertificateVolumeArgs
from components.database_volume import DatabaseVolume, DatabaseVolumeArgs
from components.project_files import ProjectFiles
from components.public_endpoint import PublicEndpoint
from components.sign_in import SignIn
from settings import REPO_ROOT, SETUP_RELEASE, RunSpec

SETUP_CHART = "charts/mlflow_setup"
PROJECT_CHART = "charts/mlflow_project"
PROJECT_DIRECTORY = "mlflow_project"
# How long the setup release may wait on a first `pulumi up`, from documented bounds. Its pods need access
# granted seconds before (kubelet AcrPull, the tracking and backup identities' federated credentials and
# Storage Blob Data Contributor, the cluster identity's Contributor on the disk): the release depends on
# those role assignments, and Azure says "role assignment changes can take up to 10 minutes to take effect"
# (https://learn.microsoft.com/azure/role-based-access-control/troubleshooting).
ROLE_PROPAGATION_SECONDS = 600
# Once effective, the kubelet's next retry picks it up: image pulls back off to at most 300 s
# (https://kubernetes.io/docs/concepts/containers/images/#imagepullbackoff), volume attach retries to
# 2 min 2 s, and readiness (the blob role, the federated credential) is probed every 20 s.
RETRY_BACKOFF_SECONDS = 300
# Then MySQL's first initialisation and the schema migration (migrate.py waits up to 300 s for MySQL).
DATABASE_START_SECONDS = 300
SETUP_TIMEOUT_SECONDS = ROLE_PROPAGATION_SECONDS + RETRY_BACKOFF_SECONDS + DATABASE_START_SECONDS
RUN_TIMEOUT_SECONDS = 600  # until the Job's pod is created; the run itself may take longer
# The Job's own wall-clock limit (retries included), from the chart: a run that another run waits for
# is installed with wait_for_jobs, so its release must outwait the Job, not cut it short and roll back.
RUN_DEADLINE_SECONDS = int(
    yaml.safe_load((REPO_ROOT / PROJECT_CHART / "values.yaml").read_text())["activeDeadlineSeconds"]
)
AWAITED_RUN_TIMEOUT_SECONDS = RUN_DEADLINE_SECONDS + RUN_TIMEOUT_SECONDS
# The tracking pod's user (and group), which its TLS terminator runs as: the certificate share's files
# appear owned by it. The program does not set `tracking.runAsUser`, so the chart's default is the one.
TRACKING_RUN_AS_USER = int(
    yaml.safe_load((REPO_ROOT / SETUP_CHART / "values.yaml").read_text())["tracking"]["runAsUser"]
)


def chart_digest(chart: Path) -> str:
    """SHA-256 over every file of a local chart (its subcharts' too, through their symlinks), by path.

    `helm.v3.Release` notices a change to a local chart only by the chart's version
    (pulumi/pulumi-kubernetes#2649), so a fixed template would never reach the cluster. The digest goes
    into the release's values (`chartDigest`): any changed, added or removed file changes them, and
    `pulumi up` upgrades that release and no other. Paths are sorted, so the walk order never matters;
    packaged subcharts (`charts/*.tgz`, made by `helm dependency build`, git-ignored) are not sources.
    """
    digest = hashlib.sha256()
    files = []
    for directory, _, names in os.walk(chart, followlinks=True):
        for name in names:
            path = Path(directory, name)
            relative = path.relative_to(chart).as_posix()
            if "__pycache__" in path.parts or (relative.startswith("charts/") and name.endswith(".tgz")):
                continue
            files.append((relative, path))
    for relative, path in sorted(files):
        digest.update(relative.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


# Pod Security Standards: every pod of the platform and of runs meets "restricted" (tests/test_policy.py
# checks the rendered charts), so the namespaces enforce it.
POD_SECURITY_RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/warn": "restricted",
    "pod-security.kubernetes.io/audit": "restricted",
}


@dataclass
class FlexibleServerConnection:
    """How the tracking server reaches the flexible server (`database: flexibleServer`)."""

    host: pulumi.Input[str]
    """The server's DNS name."""
    user: str
    """Its admin login."""
    password: pulumi.Input[str]
    """Its admin password (secret)."""
    server_name: pulumi.Input[str]
    """The server's name."""
    resource_group: pulumi.Input[str]
    """Its resource group."""
    network_cidr: str
    """Address range of its subnet."""


@dataclass
class MlflowReleasesArgs:
    provider: kubernetes.Provider
    """The cluster's Kubernetes provider; every Kubernetes and Helm resource here uses it."""
    namespace: str
    """Namespace created for the platform."""
    runs_namespace: str
    """Namespace created for run Jobs: their credentials and the project volume, nothing else."""
    exposure: str
    """`private` or `public`."""
    allowed_source_ranges: tuple[str, ...]
    """CIDRs that may reach a public server's HTTPS."""
    tracking_replicas: int
    """Tracking-server pods."""
    largest_artifact_mib: int
    """Largest artifact transfer through the server (MiB), which a stopping pod lets finish."""
    tracking_service_account: str
    """ServiceAccount federated with the tracking identity."""
    admin_username: str
    """MLflow admin user."""
    runs: tuple[RunSpec, ...]
    """One `mlflow_project` release each."""
    acr_login_server: pulumi.Input[str]
    """Registry of the images."""
    tracking_image: pulumi.Input[str]
    """Tracking-server image by digest."""
    project_image: pulumi.Input[str]
    """Project-runner image by digest."""
    mysql_image: pulumi.Input[str]
    """MySQL image by digest (the stack's copy of the official image)."""
    tracking_identity_client_id: pulumi.Input[str]
    """Client id of the tracking server's managed identity (the artifacts container; gc uses it too)."""
    backup_identity_client_id: pulumi.Input[str]
    """Client id of the backup Job's managed identity (the backups container only)."""
    storage_account: pulumi.Input[str]
    """Storage account of artifacts and backups (Entra ID only, no key access)."""
    artifacts_container: pulumi.Input[str]
    """Blob container of artifacts."""
    backups_container: pulumi.Input[str]
    """Blob container of database backups (same storage account)."""
    backup_schedule: str
    """Cron schedule (UTC) of the backup CronJob."""
    binlog_ship_minutes: int
    """Minutes between two shipments of MySQL's binary logs (the binlog CronJob)."""
    gc_schedule: str
    """Cron schedule (UTC) of the gc CronJob."""
    gc_older_than: str
    """`mlflow gc --older-than`."""
    projects_account: pulumi.Input[str]
    """Storage account of the project file share (components/project_share.py)."""
    projects_resource_group: pulumi.Input[str]
    """Its resource group."""
    projects_share: pulumi.Input[str]
    """File share of project files."""
    projects_account_key: pulumi.Input[str]
    """The project files account's key (secret): mounts the share and uploads the project."""
    mysql_disk_id: pulumi.Input[str] | None
    """Resource id of the Azure managed disk MySQL keeps its data on (in the data resource group); None
    with a flexible server."""
    mysql_disk_size_gib: int
    """Its size in GiB (the capacity of its static volume)."""
    certificate_share: CertificateShare
    """Where the TLS terminator keeps certificates (components/certificate_share.py); mounted whatever the
    exposure, so that a switch to private and back keeps the certificate."""
    jobs_pool_label: tuple[str, str] | None
    """Node label of the jobs pool, or None without one."""
    jobs_pool_taint: str | None
    """Taint of the jobs pool, or None without one."""
    public_endpoint: PublicEndpoint | None = None
    """The public IP and DNS name (`exposure: public`, components/public_endpoint.py)."""
    tls_image: pulumi.Input[str] = ""
    """TLS terminator image by digest (required when public)."""
    acme_directory: str = chart_values.LETS_ENCRYPT_DIRECTORY
    """ACME directory of the public certificate."""
    default_permission: str = "READ"
    """MLflow permission every user has on what they did not create."""
    sign_in: SignIn | None = None
    """The Entra ID application people sign in with (`auth: entra`, components/sign_in.py); None: basic
    auth. With it, run Jobs sign in with their ServiceAccount token instead of a password."""
    allowed_groups: tuple[str, ...] = ()
    """Object ids of the Entra ID groups allowed to sign in (with `sign_in`)."""
    admin_groups: tuple[str, ...] = ()
    """Object ids of the Entra ID groups of MLflow admins (with `sign_in`)."""
    run_token_issuer: pulumi.Input[str] = ""
    """The cluster's OIDC issuer URL: the server checks run Jobs' tokens against its keys (with `sign_in`)."""
    flexible_server: FlexibleServerConnection | None = None
    """The flexible server holding the databases; None: MySQL in the cluster on `mysql_disk_id`."""
    run_depends_on: list[pulumi.Resource] = field(default_factory=list)
    """What run Jobs need besides the setup release: the jobs pool they are scheduled on. A pool that
    failed to create then fails its runs at once instead of leaving them Pending until their timeout."""
    kek_version: int = 1
    """Version of the key over the AI Gateway's stored keys (config kekVersion); raising it rotates it."""
    telemetry: bool = False
    """MLflow's usage telemetry on (config mlflowTelemetry)."""
    server_jobs: bool = True
    """MLflow's server-side jobs on (config serverJobs)."""
    llm_provider_cidrs: tuple[str, ...] = ()
    """LLM providers at private addresses (config llmProviderCidrs)."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """Azure resources the pods need first (AcrPull, federated credential, blob access, disk attach)."""


def _kek_passphrase_name(name: str, version: int) -> str:
    return f"{name}-kek-passphrase" if version == 1 else f"{name}-kek-passphrase-v{version}"


def _fernet_key(standard_base64: str) -> str:
    """32 random bytes as a Fernet key: URL-safe base64 (RandomBytes gives the standard alphabet)."""
    return base64.urlsafe_b64encode(base64.b64decode(standard_base64)).decode()


def _password(name: str, parent: pulumi.Resource, length: int) -> random.RandomPassword:
    # Letters and digits only: the values travel through URLs (MySQL DSN) and shells unquoted.
    return random.RandomPassword(
        name, length=length, special=False, min_lower=2, min_upper=2, min_numeric=2,
        opts=pulumi.ResourceOptions(parent=parent),
    )  # fmt: skip


class MlflowReleases(pulumi.ComponentResource):
    namespace: kubernetes.core.v1.Namespace
    runs_namespace: kubernetes.core.v1.Namespace
    mysql_volume: DatabaseVolume | None
    """MySQL's volume on the disk; None with a flexible server."""
    certificate_volume: CertificateVolume
    setup: kubernetes.helm.v3.Release
    runs: dict[str, kubernetes.helm.v3.Release]
    tracking_url: pulumi.Output[str]
    admin_password: pulumi.Output[str]
    """MLflow admin password (secret)."""
    run_values: pulumi.Output[dict[str, Any]]
    """Non-secret `mlflow_project` values for installing one more run by hand (set `run.*`)."""

    def __init__(self, name: str, args: MlflowReleasesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:app:MlflowReleases", name, None, opts)
        k8s = pulumi.ResourceOptions(parent=self, provider=args.provider)

        self.namespace = kubernetes.core.v1.Namespace(
            f"{name}-namespace",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=args.namespace,
                labels=POD_SECURITY_RESTRICTED,
            ),
            opts=k8s,
        )
        namespace = self.namespace.metadata.apply(lambda metadata: metadata.name)
        # Runs get a namespace of their own: a project's code never shares one with the platform's secrets
        # (mlflow_setup puts the run credentials and the project volume there, and confines its pods).
        self.runs_namespace = kubernetes.core.v1.Namespace(
            f"{name}-runs-namespace",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=args.runs_namespace,
                labels=POD_SECURITY_RESTRICTED,
            ),
            opts=k8s,
        )
        runs_namespace = self.runs_namespace.metadata.apply(lambda metadata: metadata.name)

        admin_password = _password(f"{name}-admin-password", self, 24)
        flask_secret_key = _password(f"{name}-flask-secret-key", self, 64)
        # What MLflow encrypts in its database. The gateway keys' passphrase of each `kek_version` is a
        # resource of its own, and the previous version's is kept, so raising the version rotates: the
        # init container re-wraps every stored key from the previous passphrase (kek.py).
        kek_passphrase = _password(_kek_passphrase_name(name, args.kek_version), self, 64)
        previous_kek_passphrase = (
            _password(_kek_passphrase_name(name, args.kek_version - 1), self, 64).result
            if args.kek_version > 1
            else ""
        )
        webhook_key = random.RandomBytes(
            f"{name}-webhook-key", length=32, opts=pulumi.ResourceOptions(parent=self)
        ).base64.apply(_fernet_key)

        public: dict[str, pulumi.Input[str]] = {}
        if args.exposure == "public":
            if args.public_endpoint is None:
                raise ValueError("public exposure needs the public endpoint (components/public_endpoint.py)")
            public = {
                "public_hostname": args.public_endpoint.hostname,
                "public_ip_name": args.public_endpoint.ip_name,
                "public_ip_resource_group": args.public_endpoint.resource_group_name,
                "tls_image": args.tls_image,
            }

        database: dict[str, pulumi.Input[Any]] = {}
        self.mysql_volume = None
        if args.flexible_server is not None:
            server = args.flexible_server
            database = {
                "flexible_server": pulumi.Output.all(
                    host=server.host,
                    password=server.password,
                    server_name=server.server_name,
                    resource_group=server.resource_group,
                ).apply(
                    lambda resolved: chart_values.FlexibleServerContext(
                        **resolved, user=server.user, network_cidr=server.network_cidr
                    )
                )
            }
        else:
            if args.mysql_disk_id is None:
                raise ValueError("MySQL in the cluster needs its disk (components/database_disk.py)")
            # MySQL's volume and claim on the retained disk, outside the release (see database_volume.py).
            self.mysql_volume = DatabaseVolume(
                f"{name}-mysql-volume",
                DatabaseVolumeArgs(
                    provider=args.provider,
                    namespace=namespace,
                    disk_id=args.mysql_disk_id,
                    disk_size_gib=args.mysql_disk_size_gib,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            database = {
                "mysql_existing_claim": self.mysql_volume.claim_name,
                "mysql_root_password": _password(f"{name}-mysql-root-password", self, 32).result,
                "mysql_password": _password(f"{name}-mysql-password", self, 32).result,
            }

        # The TLS terminator's certificates on a share outside the release (see certificate_volume.py).
        self.certificate_volume = CertificateVolume(
            f"{name}-certificate-volume",
            CertificateVolumeArgs(
                provider=args.provider,
                namespace=namespace,
                account_name=args.certificate_share.account_name,
                resource_group_name=args.certificate_share.resource_group_name,
                share_name=args.certificate_share.share_name,
                account_key=args.certificate_share.account_key,
                size_gib=args.certificate_share.quota_gib,
                owner_uid=TRACKING_RUN_AS_USER,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )

        project_files = ProjectFiles(
            f"{name}-project-files",
            account_name=args.projects_account,
            share_name=args.projects_share,
            account_key=args.projects_account_key,
            directory=PROJECT_DIRECTORY,
            opts=pulumi.ResourceOptions(parent=self),
        )

        oidc: dict[str, pulumi.Input[Any]] = {}
        if args.sign_in is not None:
            oidc = {
                "oidc": pulumi.Output.all(
                    discovery_url=args.sign_in.discovery_url,
                    issuer=args.sign_in.issuer,
                    client_id=args.sign_in.client_id,
                    client_secret=args.sign_in.client_secret,
                    run_token_issuer=args.run_token_issuer,
                )
            }

        def oidc_context(resolved: dict[str, Any] | None) -> chart_values.OidcContext | None:
            if resolved is None:
                return None
            return chart_values.OidcContext(
                **resolved, allowed_groups=args.allowed_groups, admin_groups=args.admin_groups
            )

        setup_chart_digest = chart_digest(REPO_ROOT / SETUP_CHART)
        project_chart_digest = chart_digest(REPO_ROOT / PROJECT_CHART)
        setup_values = pulumi.Output.all(
            namespace=namespace,
            acr_login_server=args.acr_login_server,
            tracking_image=args.tracking_image,
            mysql_image=args.mysql_image,
            tracking_identity_client_id=args.tracking_identity_client_id,
            backup_identity_client_id=args.backup_identity_client_id,
            storage_account=args.storage_account,
            artifacts_container=args.artifacts_container,
            backups_container=args.backups_container,
            projects_account=args.projects_account,
            projects_resource_group=args.projects_resource_group,
            projects_share=args.projects_share,
            projects_account_key=args.projects_account_key,
            **database,
            tls_existing_claim=self.certificate_volume.claim_name,
            admin_password=admin_password.result,
            flask_secret_key=flask_secret_key.result,
            kek_passphrase=kek_passphrase.result,
            previous_kek_passphrase=previous_kek_passphrase,
            webhook_key=webhook_key,
            **public,
            **oidc,
            runs_namespace=runs_namespace,
        ).apply(
            lambda outputs: chart_values.setup_values(
                chart_values.SetupContext(
                    **{key: value for key, value in outputs.items() if key != "oidc"},
                    oidc=oidc_context(outputs.get("oidc")),
                    default_permission=args.default_permission,
                    chart_digest=setup_chart_digest,
                    exposure=args.exposure,
                    backup_schedule=args.backup_schedule,
                    binlog_ship_minutes=args.binlog_ship_minutes,
                    gc_schedule=args.gc_schedule,
                    gc_older_than=args.gc_older_than,
                    source_ranges=args.allowed_source_ranges,
                    acme_directory=args.acme_directory,
                    tracking_service_account=args.tracking_service_account,
                    admin_username=args.admin_username,
                    tracking_replicas=args.tracking_replicas,
                    kek_version=args.kek_version,
                    telemetry=args.telemetry,
                    largest_artifact_mib=args.largest_artifact_mib,
                    server_jobs=args.server_jobs,
                    llm_provider_cidrs=args.llm_provider_cidrs,
                )
            )
        )
        self.setup = kubernetes.helm.v3.Release(
            f"{name}-setup",
            name=SETUP_RELEASE,
            chart=SETUP_CHART,
            namespace=namespace,
            values=pulumi.Output.secret(setup_values),
            # No `dependency_update`: charts/mlflow_setup/charts/mysql is a symlink to the subchart, so the
            # chart is complete as checked out, and `pulumi up` writes nothing (no Chart.lock timestamp,
            # no packaged copy beside the symlink) into the working tree.
            # A failed install or upgrade rolls back by itself instead of needing a hand retry.
            atomic=True,
            cleanup_on_fail=True,
            skip_await=False,
            timeout=SETUP_TIMEOUT_SECONDS,
            max_history=10,
            opts=pulumi.ResourceOptions.merge(
                k8s,
                pulumi.ResourceOptions(
                    depends_on=[
                        *args.depends_on,
                        *([self.mysql_volume.claim] if self.mysql_volume else []),
                        self.certificate_volume.claim,
                        self.runs_namespace,
                    ]
                ),
            ),
        )

        def run_context(outputs: dict[str, Any], run: chart_values.Run) -> chart_values.ProjectContext:
            return chart_values.ProjectContext(
                namespace=outputs["namespace"],
                acr_login_server=outputs["acr_login_server"],
                project_image=outputs["project_image"],
                run=run,
                project_dir=PROJECT_DIRECTORY,
                chart_digest=project_chart_digest,
                jobs_pool_label=args.jobs_pool_label,
                jobs_pool_taint=args.jobs_pool_taint,
                # With Entra ID sign-in, a run presents its own short-lived ServiceAccount token.
                auth="password" if args.sign_in is None else "serviceAccountToken",
                telemetry=args.telemetry,
            )

        run_inputs = pulumi.Output.all(
            namespace=namespace, acr_login_server=args.acr_login_server, project_image=args.project_image
        )
        # Runs that another run lists in `after` (settings checked that they come earlier in `runs`).
        awaited = {other for spec in args.runs for other in spec.after}
        self.runs = {}
        for spec in args.runs:
            run = chart_values.Run(spec.name, spec.entry_point, spec.experiment, dict(spec.parameters))
            self.runs[spec.name] = kubernetes.helm.v3.Release(
                f"{name}-run-{spec.name}",
                name=spec.name,
                chart=PROJECT_CHART,
                namespace=runs_namespace,
                values=run_inputs.apply(
                    lambda outputs, run=run: chart_values.project_values(run_context(outputs, run))
                ),
                atomic=True,
                cleanup_on_fail=True,
                skip_await=False,
                # Normally the release is done when its Job exists and the run's own outcome is in the
                # Job's logs. A run others wait for must complete first: its release waits for the Job,
                # and a failed Job fails (and rolls back) the release, so its dependants are not installed.
                wait_for_jobs=spec.name in awaited,
                timeout=AWAITED_RUN_TIMEOUT_SECONDS if spec.name in awaited else RUN_TIMEOUT_SECONDS,
                opts=pulumi.ResourceOptions.merge(
                    k8s,
                    pulumi.ResourceOptions(
                        depends_on=[
                            self.setup,
                            project_files,
                            *args.run_depends_on,
                            *(self.runs[other] for other in spec.after),
                        ],
                        # A changed run (parameters, experiment, image digest) is a new run. Upgrading the
                        # release in place would patch the Job's immutable pod template and fail, so any
                        # change to the values replaces the release instead: uninstall, then install
                        # (the release name is fixed, so the old one must go first).
                        replace_on_changes=["values"],
                        delete_before_replace=True,
                    ),
                ),
            )

        # What `helm install <name> charts/mlflow_project` needs besides `run.*`: nothing secret.
        example = chart_values.Run("example", "main", "Default", {})
        self.run_values = run_inputs.apply(
            lambda outputs: {
                key: value
                for key, value in chart_values.project_values(run_context(outputs, example)).items()
                if key != "run"
            }
        )
        if args.public_endpoint is not None and args.exposure == "public":
            # HTTPS on 443 only: port 80 redirects here, and the server's own port is in-cluster only.
            self.tracking_url = pulumi.Output.concat("https://", args.public_endpoint.hostname)
        else:
            self.tracking_url = namespace.apply(chart_values.tracking_url)
        self.admin_password = pulumi.Output.secret(admin_password.result)

        self.register_outputs(
            {
                "namespace": namespace,
                "trackingUrl": self.tracking_url,
                "adminPassword": self.admin_password,
                "runValues": self.run_values,
                "runs": list(self.runs),
            }
        )
