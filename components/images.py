"""Every image the platform runs (tracking server, project runner, MySQL): built from images/ by
`pulumi up` (local Docker engine) and pushed to ACR with the deployer service principal's credentials,
never the ACR admin user. The charts reference each image by its repo digest, so a rebuilt image rolls
the pods, and nothing is pulled from a public registry at run time. One more image is one more
`ImageSource` in `SOURCES` (and its directory under images/); its ref is `Images.refs[directory]`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

from components.registry_access import RegistryPushAccess

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = REPO_ROOT / "images"
# AKS nodes are x86_64; build for them even on an arm64 workstation.
PLATFORM = "linux/amd64"


@dataclass(frozen=True)
class ImageSource:
    """One image the program builds and pushes."""

    directory: str
    """Build context `images/<directory>` (its own `Dockerfile`); also the image resource's name suffix."""
    repository: str
    """ACR repository it is pushed to."""


TRACKING_SERVER = ImageSource("tracking-server", "mlflow-tracking-server")
PROJECT = ImageSource("project", "mlflow-project")
# The official MySQL image by digest (images/mysql/Dockerfile), so the cluster pulls it from ACR too.
MYSQL = ImageSource("mysql", "mlflow-mysql")
# Caddy with the public endpoint's Caddyfile (images/tls-proxy): the TLS terminator sidecar.
TLS_PROXY = ImageSource("tls-proxy", "mlflow-tls-proxy")
SOURCES: tuple[ImageSource, ...] = (TRACKING_SERVER, PROJECT, MYSQL, TLS_PROXY)


def context_tag(context: Path) -> str:
    """A tag naming the build context's content: same files, same tag (the digest is what pods use)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in context.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(path.relative_to(context).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@dataclass
class ImagesArgs:
    login_server: pulumi.Input[str]
    """ACR login server the images are pushed to."""
    username: pulumi.Input[str]
    """Client id of the deployer service principal."""
    password: pulumi.Input[str]
    """Password of the deployer service principal (secret)."""
    push_permissions: list[pulumi.Resource]
    """The deployer's AcrPush role assignments: the push-access check starts once they exist."""


class Images(pulumi.ComponentResource):
    push_access: RegistryPushAccess
    """Exists once the deployer's credential may push to every repository: the images wait for it."""
    images: dict[str, docker.Image]
    """Each `ImageSource`'s image, by directory."""
    refs: dict[str, pulumi.Output[str]]
    """`<acr>/<repository>@sha256:…` (the repo digest the charts use), by directory."""
    tracking_server_ref: pulumi.Output[str]
    """`<acr>/mlflow-tracking-server@sha256:…`"""
    project_ref: pulumi.Output[str]
    """`<acr>/mlflow-project@sha256:…`"""
    mysql_ref: pulumi.Output[str]
    """`<acr>/mlflow-mysql@sha256:…`"""
    tls_proxy_ref: pulumi.Output[str]
    """`<acr>/mlflow-tls-proxy@sha256:…`"""

    def __init__(self, name: str, args: ImagesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:app:Images", name, None, opts)

        registry = docker.RegistryArgs(
            server=args.login_server,
            username=args.username,
            password=pulumi.Output.secret(args.password),
        )

        # A new password and AcrPush take minutes to become effective: wait until the registry hands this
        # credential a push token (components/registry_access.py), rather than fail the first push.
        self.push_access = RegistryPushAccess(
            f"{name}-push-access",
            login_server=args.login_server,
            username=args.username,
            password=args.password,
            repositories=[source.repository for source in SOURCES],
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.push_permissions),
        )

        def build(source: ImageSource) -> docker.Image:
            context = IMAGES_DIR / source.directory
            return docker.Image(
                f"{name}-{source.directory}",
                image_name=pulumi.Output.concat(
                    args.login_server, "/", source.repository, ":", context_tag(context)
                ),
                # Relative to the project directory, where `pulumi up` runs the program (and the Docker
                # provider): the inputs are then the same in every checkout, so moving or re-cloning the
                # repository is no change. The Dockerfile is the context's own `Dockerfile` (the default).
                build=docker.DockerBuildArgs(
                    context=context.relative_to(REPO_ROOT).as_posix(),
                    platform=PLATFORM,
                ),
                registry=registry,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[self.push_access]),
            )

        self.images = {source.directory: build(source) for source in SOURCES}
        self.refs = {directory: image.repo_digest for directory, image in self.images.items()}
        self.tracking_server_ref = self.refs[TRACKING_SERVER.directory]
        self.project_ref = self.refs[PROJECT.directory]
        self.mysql_ref = self.refs[MYSQL.directory]
        self.tls_proxy_ref = self.refs[TLS_PROXY.directory]

        self.register_outputs({"refs": self.refs})
