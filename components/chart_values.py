"""Helm values of the `mlflow_setup` and `mlflow_project` charts, from stack outputs.

Pure: no Pulumi import, no I/O besides reading the jinja2 templates in `templates/`. The program calls
these inside `Output.all(...).apply(...)` with the resolved outputs, so the values (secrets included)
go straight to the `helm.v3.Release` and never touch the disk:

    values = Output.all(...).apply(lambda a: setup_values(SetupContext(...)))

- `setup_values(SetupContext)` -> values of charts/mlflow_setup (tracking server, MySQL or the flexible
  server, project volume);
- `project_values(ProjectContext)` -> values of charts/mlflow_project for one run;
- `tracking_url(namespace)`, `RUN_CREDENTIALS_SECRET`, `PROJECTS_CLAIM`: the names mlflow_setup
  gives its objects, which run Jobs (and users installing a run by hand) refer to.
- `sign_in_callback(hostname)`: where Entra ID sends the browser back (`auth: entra`), shared with the
  application's redirect URIs (components/sign_in.py).

Each template interpolates every value through `tojson` (JSON is valid YAML), so a stack output can
never change the structure of the values document; the charts' values.schema.json then checks them.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import yaml

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"

# Base of mlflow_setup's object names (its fullnameOverride), fixed so that names are predictable.
FULLNAME = "mlflow"
TRACKING_SERVICE = f"{FULLNAME}-tracking"
TRACKING_SERVICE_PORT = 5000
RUN_CREDENTIALS_SECRET = f"{FULLNAME}-run-credentials"
RUN_USERNAME = "runner"
PROJECTS_CLAIM = f"{FULLNAME}-project-files"
MYSQL_FULLNAME = f"{FULLNAME}-mysql"
# Prefix of the database backups in their container.
BACKUPS_PATH = "databases"
# ServiceAccount of the backup Jobs (and restores), federated with the backup identity: the only one that
# may write the backups container.
BACKUP_SERVICE_ACCOUNT = f"{FULLNAME}-backup"
# MySQL's data claim (components/database_volume.py, on the retained disk) and what it requests; the
# disk must hold at least that much.
MYSQL_DATA_CLAIM = f"{MYSQL_FULLNAME}-data"
MYSQL_CLAIM_GIB = 8
# The TLS terminator's certificate claim (components/certificate_volume.py, on a share outside the release).
TLS_CERTIFICATES_CLAIM = f"{FULLNAME}-tls-certificates"
# Where the public endpoint's certificate comes from unless config says otherwise (acmeDirectory).
LETS_ENCRYPT_DIRECTORY = "https://acme-v02.api.letsencrypt.org/directory"
# Local port of `kubectl port-forward` (the stack's `portForward` output) on the user's machine.
PORT_FORWARD_PORT = 5000
# Where the sign-in provider sends the browser back to the tracking server (`auth: entra`).
SIGN_IN_CALLBACK_PATH = "/callback"
# Audience of run Jobs' projected ServiceAccount tokens (`auth: entra`): only the tracking server takes them.
RUN_TOKEN_AUDIENCE = "mlflow-tracking"  # noqa: S105 - an audience, not a password
# MLflow's permissions (mlflow.server.auth.permissions), the choices of `tracking.auth.defaultPermission`
# (config defaultPermission).
MLFLOW_PERMISSIONS = ("READ", "EDIT", "MANAGE", "NO_PERMISSIONS")
# How a run Job signs in to the tracking server (charts/mlflow_project `tracking.auth`).
RUN_AUTH_MODES = ("password", "serviceAccountToken")
# Debian's CA bundle in the tracking image (python:*-slim installs `ca-certificates`): it holds DigiCert
# Global Root G2 and DigiCert Global Root CA, the roots Azure Database for MySQL's certificates chain to
# (https://learn.microsoft.com/azure/mysql/flexible-server/concepts-root-certificate-rotation).
SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

_IMAGE_REF = re.compile(
    r"^(?P<registry>[a-z0-9.-]+(:[0-9]+)?)/(?P<repository>[a-z0-9]+([._/-][a-z0-9]+)*)"
    r"(:[\w.-]+)?@(?P<digest>sha256:[a-f0-9]{64})$"
)
_TAINT = re.compile(
    r"^(?P<key>[^=:]+)(=(?P<value>[^:]*))?:(?P<effect>NoSchedule|PreferNoSchedule|NoExecute)$"
)


@dataclass(frozen=True)
class ImageRef:
    """An image by digest: `<registry>/<repository>@sha256:<hex>`."""

    registry: str
    repository: str
    digest: str

    @classmethod
    def parse(cls, ref: str, registry: str | None = None) -> ImageRef:
        """Parse `pulumi_docker.Image.repo_digest`; when `registry` is given the image must live there."""
        match = _IMAGE_REF.match(ref)
        if not match:
            raise ValueError(f"image reference {ref!r} is not <registry>/<repository>@sha256:<64 hex>")
        image = cls(match["registry"], match["repository"], match["digest"])
        if registry is not None and image.registry != registry:
            raise ValueError(f"image {ref!r} is not in the registry {registry!r}")
        return image


def sign_in_callback(public_hostname: str = "") -> str:
    """The sign-in redirect URI: the public name over HTTPS, or (no name) the port-forward on localhost."""
    if public_hostname:
        return f"https://{public_hostname}{SIGN_IN_CALLBACK_PATH}"
    return f"http://localhost:{PORT_FORWARD_PORT}{SIGN_IN_CALLBACK_PATH}"


@dataclass(frozen=True)
class OidcContext:
    """Sign-in through an OpenID Connect provider (config `auth: entra`, components/sign_in.py):
    charts/mlflow_setup's `tracking.auth.oidc`."""

    discovery_url: str
    """The provider's OpenID discovery document (`<issuer>/.well-known/openid-configuration`)."""
    issuer: str
    """Issuer (`iss`) of the provider's tokens, pinned."""
    client_id: str
    """Client id of the registered application."""
    client_secret: str
    """Its client secret (secret)."""
    allowed_groups: tuple[str, ...]
    """`groups` claim values (Entra ID group object ids) allowed to sign in."""
    admin_groups: tuple[str, ...]
    """`groups` claim values that make a user an MLflow admin."""
    run_token_issuer: str
    """Issuer of the cluster's ServiceAccount tokens (the AKS OIDC issuer URL), which run Jobs present."""
    audience: str = ""
    """Audience bearer tokens must carry; empty: the client id (Entra ID v2 tokens for the app's scope)."""
    run_token_audience: str = RUN_TOKEN_AUDIENCE
    """Audience of run Jobs' projected tokens."""


@dataclass(frozen=True)
class FlexibleServerContext:
    """The flexible server the tracking server uses (config `database: flexibleServer`,
    components/database_server.py): charts/mlflow_setup's `externalDatabase`, with TLS."""

    host: str
    """The server's DNS name (`<name>.mysql.database.azure.com`), the name its certificate is for."""
    user: str
    """Its admin login."""
    password: str
    """Its admin password (secret, generated)."""
    server_name: str
    """The server's name: migrate.py's restore command names it."""
    resource_group: str
    """Its resource group (the data group)."""
    network_cidr: str
    """Address range of its delegated subnet: only the tracking server and maintenance Jobs reach it."""
    ca_file: str = SYSTEM_CA_BUNDLE
    """CA bundle in the tracking image that its certificate is verified against."""


@dataclass(frozen=True)
class SetupContext:
    """Stack outputs (resolved, plain values) that charts/mlflow_setup needs."""

    namespace: str
    """Kubernetes namespace of the platform."""
    acr_login_server: str
    """ACR login server, e.g. `mlflowacr1a2b.azurecr.io`."""
    tracking_image: str
    """Tracking-server image by digest (`pulumi_docker.Image.repo_digest`), in that ACR."""
    mysql_image: str
    """MySQL image by digest (images/mysql, `pulumi_docker.Image.repo_digest`), in that ACR."""
    tracking_identity_client_id: str
    """Client id of the tracking server's user-assigned identity (workload identity): the artifacts."""
    backup_identity_client_id: str
    """Client id of the backup Job's user-assigned identity (workload identity): the backups."""
    storage_account: str
    """Storage account of the artifact and backup containers (Entra ID only: no key opens it)."""
    artifacts_container: str
    """Blob container of MLflow artifacts."""
    projects_account: str
    """Storage account of the project file share (an account of its own: the share is mounted with a key)."""
    projects_resource_group: str
    """Resource group of the project files account (part of the Azure Files volume handle)."""
    projects_share: str
    """File share holding MLflow projects."""
    backups_container: str
    """Blob container of database backups (in the artifacts' storage account)."""
    projects_account_key: str
    """Key of the project files account, which mounts the share (secret)."""
    admin_password: str
    """Password of the MLflow admin user (secret, generated, at least 12 characters)."""
    flask_secret_key: str
    """Flask secret key shared by the tracking replicas (secret, generated, at least 16 characters)."""
    kek_passphrase: str
    """Passphrase of MLflow's key-encryption key over the AI Gateway's stored keys (secret, generated,
    at least 32 characters)."""
    webhook_key: str
    """Fernet key of MLflow's webhook secrets (secret, generated: 32 bytes, URL-safe base64)."""
    kek_version: int = 1
    """Version of the key-encryption key (config kekVersion)."""
    previous_kek_passphrase: str = ""
    """Passphrase of version `kek_version - 1` (secret), kept so that keys still wrapped with it are
    re-wrapped; empty at version 1."""
    telemetry: bool = False
    """MLflow's usage telemetry on (config mlflowTelemetry)."""
    server_jobs: bool = True
    """MLflow's server-side jobs and their runner pod (config serverJobs)."""
    llm_provider_cidrs: tuple[str, ...] = ()
    """CIDR ranges of LLM providers the gateway and judges reach (config llmProviderCidrs)."""
    mysql_root_password: str = ""
    """MySQL root password (secret, generated; required unless `flexible_server`)."""
    mysql_password: str = ""
    """MySQL password of the tracking server's user (secret, generated; URL-safe characters preferred;
    required unless `flexible_server`)."""
    flexible_server: FlexibleServerContext | None = None
    """The Azure flexible server holding the databases; None: MySQL in the cluster (charts/mysql)."""
    exposure: str = "private"
    """`private` (ClusterIP) or `public` (HTTPS through the TLS terminator; port 443 limited to
    `source_ranges`)."""
    source_ranges: tuple[str, ...] = ()
    """CIDR ranges allowed to reach a public tracking server (required when public)."""
    public_hostname: str = ""
    """DNS name of the public IP (`<label>.<region>.cloudapp.azure.com`): certificate name and Host."""
    public_ip_name: str = ""
    """Static public IP the public Services share (components/public_endpoint.py)."""
    public_ip_resource_group: str = ""
    """Resource group of that public IP."""
    tls_image: str = ""
    """TLS terminator image by digest (images/tls-proxy), in the stack's ACR; required when public."""
    acme_directory: str = LETS_ENCRYPT_DIRECTORY
    """ACME directory of the public certificate."""
    tls_existing_claim: str = ""
    """Claim holding the terminator's certificates, keys and ACME account (components/certificate_volume.py:
    a static volume on a share outside the release). Empty: the chart makes a claim of its own, which a
    rollback, an uninstall or a switch to private deletes."""
    extra_allowed_hosts: tuple[str, ...] = ()
    """More Host headers the server accepts."""
    tracking_service_account: str = "mlflow-tracking"
    """ServiceAccount the tracking identity's federated credential names."""
    backup_service_account: str = BACKUP_SERVICE_ACCOUNT
    """ServiceAccount the backup identity's federated credential names."""
    run_service_account: str = "mlflow-run"
    """ServiceAccount of run Jobs."""
    runs_namespace: str = ""
    """Namespace of run Jobs, their credentials and the project volume (empty: `namespace`)."""
    admin_username: str = "admin"
    """MLflow admin user name."""
    artifacts_path: str = "artifacts"
    """Path in the artifact container under which the server stores artifacts."""
    tracking_replicas: int = 2
    """Tracking-server pods."""
    largest_artifact_mib: int = 10240
    """Largest artifact transfer through the server (MiB), which a stopping pod lets finish."""
    run_password: str = ""
    """Password of the non-admin user run Jobs log in as (secret). Empty: derived from
    `flask_secret_key` (HMAC-SHA256), so the run user exists without one more generated secret."""
    mysql_existing_claim: str = ""
    """Claim holding MySQL's data (components/database_volume.py: a static volume on the retained Azure
    disk, outside the release). Empty: the StatefulSet provisions a disk dynamically with the cluster."""
    chart_digest: str = ""
    """SHA-256 of charts/mlflow_setup's files (`chartDigest`): a changed chart changes the values."""
    backup_schedule: str = "0 2 * * *"
    binlog_ship_minutes: int = 5
    """Cron schedule (UTC) of the backup CronJob."""
    gc_schedule: str = "30 3 * * *"
    """Cron schedule (UTC) of the gc CronJob."""
    gc_older_than: str = "30d"
    """`mlflow gc --older-than`."""
    default_permission: str = "READ"
    """MLflow permission every user has on what they did not create (config defaultPermission)."""
    oidc: OidcContext | None = None
    """Sign-in with Entra ID (`tracking.auth.mode: oidc`); None: MLflow's basic auth."""

    def backup_destination(self) -> str:
        """Where the backup Job and the pre-migration backup write (backup.py's wasbs URI)."""
        return f"wasbs://{self.backups_container}@{self.storage_account}.blob.core.windows.net/{BACKUPS_PATH}"

    def effective_run_password(self) -> str:
        if self.run_password:
            return self.run_password
        digest = hmac.new(self.flask_secret_key.encode(), b"mlflow-aks run user", hashlib.sha256)
        return digest.hexdigest()[:32]

    def llm_private_addresses(self) -> bool:
        """Whether a provider range is private: MLflow then must allow private `api_base` addresses
        (MLFLOW_GATEWAY_API_BASE_ALLOW_PRIVATE_IPS), which it refuses by default."""
        return any(not ipaddress.ip_network(cidr, strict=False).is_global for cidr in self.llm_provider_cidrs)

    def public_url(self) -> str | None:
        """The tracking URL from outside the cluster (HTTPS on 443), or None when private."""
        return f"https://{self.public_hostname}" if self.exposure == "public" else None

    def sign_in_redirect_uri(self) -> str:
        """`tracking.auth.oidc.redirectUri`: the public callback, or empty when private (the chart then
        uses the port-forward's `http://localhost:<port>/callback`)."""
        return sign_in_callback(self.public_hostname) if self.exposure == "public" else ""


@dataclass(frozen=True)
class Run:
    """One configured run: config `runs` entry `{name, entryPoint, experiment, parameters}`."""

    name: str
    """Release name (the Job is `<name>-mlflow-project`)."""
    entry_point: str
    experiment: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProjectContext:
    """Stack outputs and one run, for charts/mlflow_project."""

    namespace: str
    """Namespace of mlflow_setup (the Job runs beside the tracking server)."""
    acr_login_server: str
    """ACR login server."""
    project_image: str
    """Project-runner image by digest (`pulumi_docker.Image.repo_digest`), in that ACR."""
    run: Run
    """The run."""
    project_dir: str = "mlflow_project"
    """Directory of the project on the share (`/projects/<project_dir>`)."""
    run_service_account: str = "mlflow-run"
    """ServiceAccount of run Jobs (created by mlflow_setup)."""
    jobs_pool_label: tuple[str, str] | None = None
    """Node label `(key, value)` of the jobs pool, or None when there is no jobs pool."""
    jobs_pool_taint: str | None = None
    """Taint `key=value:Effect` of the jobs pool, tolerated by run Jobs."""
    chart_digest: str = ""
    """SHA-256 of charts/mlflow_project's files (`chartDigest`): a changed chart changes the values."""
    auth: str = "password"
    """How the run signs in: `password` (mlflow_setup's run credentials) or `serviceAccountToken` (its
    projected ServiceAccount token, for a server with Entra ID sign-in)."""
    token_audience: str = RUN_TOKEN_AUDIENCE
    """Audience of the projected token (`serviceAccountToken`)."""
    telemetry: bool = False
    """MLflow's usage telemetry on in the run (config mlflowTelemetry)."""


def tracking_url(namespace: str) -> str:
    """In-cluster URL of the tracking server (MLFLOW_TRACKING_URI of run Jobs)."""
    return f"http://{TRACKING_SERVICE}.{namespace}.svc.cluster.local:{TRACKING_SERVICE_PORT}"


def parameter_value(value: Any) -> str:
    """A run parameter as `mlflow run -P key=value` receives it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise TypeError(f"run parameter value {value!r} must be a string, number or boolean")


def _toleration(taint: str) -> dict[str, str]:
    match = _TAINT.match(taint)
    if not match:
        raise ValueError(f"taint {taint!r} is not key[=value]:Effect")
    if match["value"] is None:
        return {"key": match["key"], "operator": "Exists", "effect": match["effect"]}
    return {"key": match["key"], "operator": "Equal", "value": match["value"], "effect": match["effect"]}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 - YAML, not HTML; every value is JSON-encoded by `tojson`
        keep_trailing_newline=True,
    )
    # Plain JSON (jinja's own filter HTML-escapes); a JSON scalar or list is a valid YAML flow value.
    env.filters["tojson"] = lambda value: json.dumps(value, ensure_ascii=True)
    return env


def _render(template: str, **context: Any) -> dict[str, Any]:
    text = _environment().get_template(template).render(**context)
    values = yaml.safe_load(text)
    if not isinstance(values, dict):
        raise ValueError(f"{template} did not render to a mapping")
    return values


def setup_values(ctx: SetupContext) -> dict[str, Any]:
    """Values of charts/mlflow_setup."""
    if ctx.exposure not in ("private", "public"):
        raise ValueError(f"exposure must be 'private' or 'public', got {ctx.exposure!r}")
    tls_image = None
    if ctx.exposure == "public":
        if not ctx.source_ranges:
            raise ValueError("public exposure needs at least one source range (CIDR)")
        missing = [
            name
            for name in ("public_hostname", "public_ip_name", "public_ip_resource_group", "tls_image")
            if not getattr(ctx, name)
        ]
        if missing:
            raise ValueError(f"public exposure needs {', '.join(missing)}")
        tls_image = ImageRef.parse(ctx.tls_image, ctx.acr_login_server)
    if ctx.default_permission not in MLFLOW_PERMISSIONS:
        raise ValueError(f"default permission must be one of {', '.join(MLFLOW_PERMISSIONS)}")
    if ctx.flexible_server is None and not (ctx.mysql_root_password and ctx.mysql_password):
        raise ValueError("MySQL in the cluster needs mysql_root_password and mysql_password")
    if ctx.flexible_server is not None:
        missing = [name for name, value in vars(ctx.flexible_server).items() if not value]
        if missing:
            raise ValueError(f"the flexible server needs {', '.join(missing)}")
    if ctx.oidc is not None:
        missing = [
            name
            for name in (
                "discovery_url",
                "issuer",
                "client_id",
                "client_secret",
                "allowed_groups",
                "admin_groups",
                "run_token_issuer",
            )
            if not getattr(ctx.oidc, name)
        ]
        if missing:
            raise ValueError(f"sign-in with Entra ID needs {', '.join(missing)}")
    # The chart adds the public name itself (charts/mlflow_setup/templates/_helpers.tpl).
    allowed_hosts = list(ctx.extra_allowed_hosts)
    return _render(
        "mlflow_setup.values.yaml.j2",
        ctx=ctx,
        fullname=FULLNAME,
        mysql_fullname=MYSQL_FULLNAME,
        tracking_image=ImageRef.parse(ctx.tracking_image, ctx.acr_login_server),
        mysql_image=ImageRef.parse(ctx.mysql_image, ctx.acr_login_server),
        tls_image=tls_image,
        allowed_hosts=list(dict.fromkeys(allowed_hosts)),
        run_username=RUN_USERNAME,
        run_password=ctx.effective_run_password(),
    )


def project_values(ctx: ProjectContext) -> dict[str, Any]:
    """Values of charts/mlflow_project for `ctx.run` (install it as release `ctx.run.name`)."""
    if ctx.auth not in RUN_AUTH_MODES:
        raise ValueError(f"run auth must be one of {', '.join(RUN_AUTH_MODES)}, got {ctx.auth!r}")
    jobs_pool = None
    if ctx.jobs_pool_label is not None:
        if ctx.jobs_pool_taint is None:
            raise ValueError("a jobs pool needs its taint to be tolerated")
        key, value = ctx.jobs_pool_label
        jobs_pool = {"node_selector": {key: value}, "tolerations": [_toleration(ctx.jobs_pool_taint)]}
    return _render(
        "mlflow_project.values.yaml.j2",
        ctx=ctx,
        run=ctx.run,
        project_image=ImageRef.parse(ctx.project_image, ctx.acr_login_server),
        parameters={str(k): parameter_value(v) for k, v in ctx.run.parameters.items()},
        tracking_uri=tracking_url(ctx.namespace),
        credentials_secret=RUN_CREDENTIALS_SECRET,
        claim_name=PROJECTS_CLAIM,
        jobs_pool=jobs_pool,
    )
