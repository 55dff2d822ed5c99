"""The certificate share on the cluster: the Secret the Azure Files CSI driver mounts it with, a static
PersistentVolume on it and the claim bound to that, owned by Pulumi, not by the `mlflow` Helm release.

As for MySQL's data (components/database_volume.py): the release mounts the claim by name
(`tls.storage.existingClaim`) and makes no claim of its own, so neither the atomic rollback of a failed
install, nor `helm uninstall`, nor a switch to private exposure and back deletes the certificate (see
components/certificate_share.py for why that matters). All three are created whatever the exposure.

Mount options: the files appear owned by the TLS terminator's user and group (the tracking pod's
`runAsUser`, which is also its group and fsGroup), directories 0700 and files 0600. SMB has no POSIX
modes of its own; the mount fixes them, so no other user can read a private key whatever Caddy asks
for. The rest are the options of AKS's own Azure Files class.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as kubernetes

from components.chart_values import TLS_CERTIFICATES_CLAIM

LABELS = {"app.kubernetes.io/part-of": "mlflow-aks", "app.kubernetes.io/component": "tls"}


def mount_options(owner_uid: int) -> list[str]:
    return [
        f"uid={owner_uid}",
        f"gid={owner_uid}",
        "dir_mode=0700",
        "file_mode=0600",
        "mfsymlinks",
        "cache=strict",
        "nosharesock",
        "actimeo=30",
    ]


@dataclass
class CertificateVolumeArgs:
    provider: kubernetes.Provider
    """The cluster's Kubernetes provider."""
    namespace: pulumi.Input[str]
    """Namespace of the claim and the Secret (the platform's, where the tracking pods run)."""
    account_name: pulumi.Input[str]
    """Storage account of the share (components/certificate_share.py)."""
    resource_group_name: pulumi.Input[str]
    """Its resource group (part of the volume handle)."""
    share_name: pulumi.Input[str]
    """The file share."""
    account_key: pulumi.Input[str]
    """The account's key (secret): what the CSI driver mounts the share with."""
    size_gib: int
    """Quota of the share: the volume's capacity and what the claim requests."""
    owner_uid: int
    """User and group the files appear owned by: the TLS terminator's (the chart's `tracking.runAsUser`)."""


class CertificateVolume(pulumi.ComponentResource):
    secret: kubernetes.core.v1.Secret
    volume: kubernetes.core.v1.PersistentVolume
    claim: kubernetes.core.v1.PersistentVolumeClaim
    claim_name: pulumi.Output[str]
    """What the chart mounts (`tls.storage.existingClaim`)."""

    def __init__(self, name: str, args: CertificateVolumeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:app:CertificateVolume", name, None, opts)
        k8s = pulumi.ResourceOptions(parent=self, provider=args.provider)
        namespace = pulumi.Output.from_input(args.namespace)

        # Read by the CSI driver only (nodeStageSecretRef); no pod mounts it.
        self.secret = kubernetes.core.v1.Secret(
            f"{name}-secret",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=f"{TLS_CERTIFICATES_CLAIM}-share", namespace=namespace, labels=LABELS
            ),
            type="Opaque",
            string_data={
                "azurestorageaccountname": args.account_name,
                "azurestorageaccountkey": pulumi.Output.secret(args.account_key),
            },
            opts=k8s,
        )
        # Static on both sides and pre-bound both ways, as MySQL's volume.
        self.volume = kubernetes.core.v1.PersistentVolume(
            f"{name}-volume",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                # Cluster-scoped: the namespace in the name keeps two platforms on one cluster apart.
                name=namespace.apply(lambda ns: f"{ns}-{TLS_CERTIFICATES_CLAIM}"),
                labels=LABELS,
            ),
            spec=kubernetes.core.v1.PersistentVolumeSpecArgs(
                capacity={"storage": f"{args.size_gib}Gi"},
                access_modes=["ReadWriteMany"],  # every tracking replica's terminator
                # Deleting the claim or this object never deletes the share (with Delete the driver would).
                persistent_volume_reclaim_policy="Retain",
                storage_class_name="",
                claim_ref=kubernetes.core.v1.ObjectReferenceArgs(
                    namespace=namespace, name=TLS_CERTIFICATES_CLAIM
                ),
                mount_options=mount_options(args.owner_uid),
                csi=kubernetes.core.v1.CSIPersistentVolumeSourceArgs(
                    driver="file.csi.azure.com",
                    # `<resource group>#<account>#<share>`, unique in the cluster (one account per stack), as
                    # https://learn.microsoft.com/azure/aks/azure-csi-files-storage-provision writes it.
                    volume_handle=pulumi.Output.concat(
                        args.resource_group_name, "#", args.account_name, "#", args.share_name
                    ),
                    volume_attributes={"shareName": args.share_name},
                    node_stage_secret_ref=kubernetes.core.v1.SecretReferenceArgs(
                        name=self.secret.metadata.apply(lambda metadata: metadata.name), namespace=namespace
                    ),
                ),
            ),
            opts=k8s,
        )
        self.claim = kubernetes.core.v1.PersistentVolumeClaim(
            f"{name}-claim",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=TLS_CERTIFICATES_CLAIM, namespace=namespace, labels=LABELS
            ),
            spec=kubernetes.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteMany"],
                storage_class_name="",
                volume_name=self.volume.metadata.apply(lambda metadata: metadata.name),
                resources=kubernetes.core.v1.VolumeResourceRequirementsArgs(
                    requests={"storage": f"{args.size_gib}Gi"}
                ),
            ),
            opts=k8s,
        )
        self.claim_name = self.claim.metadata.apply(lambda metadata: metadata.name)

        self.register_outputs({"claimName": self.claim_name})
