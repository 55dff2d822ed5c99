"""The tracking-server and project-runner images: built from images/ by `pulumi up` (local Docker
engine) and pushed to ACR with the deployer service principal's credentials, never the ACR admin user.
The charts reference each image by its repo digest, so a rebuilt image rolls the pods."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_docker as docker

from components.registry_access import RegistryPushAccess

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = REPO_ROOT / "images"
TRACKING_SERVER_REPOSITORY = "mlflow-tracking-server"
PROJECT_REPOSITORY = "mlflow-project"
# AKS nodes are x86_64; build for them even on an arm64 workstation.
PLATFORM = "linux/amd64"


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
    """Exists once the deployer's credential may push to both repositories: the images wait for it."""
    tracking_server: docker.Image
    project: docker.Image
    tracking_server_ref: pulumi.Output[str]
    """`<acr>/mlflow-tracking-server@sha256:…`"""
    project_ref: pulumi.Output[str]
    """`<acr>/mlflow-project@sha256:…`"""

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
            repositories=[TRACKING_SERVER_REPOSITORY, PROJECT_REPOSITORY],
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.push_permissions),
        )

        def build(suffix: str, repository: str, context: Path) -> docker.Image:
            return docker.Image(
                f"{name}-{suffix}",
                image_name=pulumi.Output.concat(
                    args.login_server, "/", repository, ":", context_tag(context)
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

        self.tracking_server = build(
            "tracking-server", TRACKING_SERVER_REPOSITORY, IMAGES_DIR / "tracking-server"
        )
        self.project = build("project", PROJECT_REPOSITORY, IMAGES_DIR / "project")
        self.tracking_server_ref = self.tracking_server.repo_digest
        self.project_ref = self.project.repo_digest

        self.register_outputs({"trackingServerRef": self.tracking_server_ref, "projectRef": self.project_ref})
