"""MySQL's data volume on the cluster: a static PersistentVolume on the retained Azure disk and the claim
bound to it, owned by Pulumi, not by the `mlflow` Helm release.

Why not in the chart: when an install of the release fails, Helm's atomic rollback deletes what the
release made, but never a claim that a StatefulSet made from its `volumeClaimTemplates`. A static volume
inside the release was therefore deleted while that claim still held it, stayed `Terminating`, and the
next install failed on it. Here the volume and the claim live beside the release: a rollback deletes
the StatefulSet only, the claim stays bound to the disk, and the next install mounts it again with the
data untouched. charts/mysql mounts the claim by name (`persistence.existingClaim`), so it can never
provision a disk of its own by accident.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as kubernetes

from components.chart_values import MYSQL_CLAIM_GIB, MYSQL_DATA_CLAIM


@dataclass
class DatabaseVolumeArgs:
    provider: kubernetes.Provider
    """The cluster's Kubernetes provider."""
    namespace: pulumi.Input[str]
    """Namespace of the claim (the platform's)."""
    disk_id: pulumi.Input[str]
    """Resource id of the Azure managed disk: the CSI volume handle."""
    disk_size_gib: int
    """Size of the disk: the volume's capacity."""


class DatabaseVolume(pulumi.ComponentResource):
    volume: kubernetes.core.v1.PersistentVolume
    claim: kubernetes.core.v1.PersistentVolumeClaim
    claim_name: pulumi.Output[str]
    """What charts/mysql mounts (`persistence.existingClaim`)."""

    def __init__(self, name: str, args: DatabaseVolumeArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:app:DatabaseVolume", name, None, opts)
        k8s = pulumi.ResourceOptions(parent=self, provider=args.provider)
        namespace = pulumi.Output.from_input(args.namespace)

        # No storage class on either side: a static volume, bound by name, never a dynamic provision.
        # Pre-bound both ways (claimRef / volumeName), the pair binds at once, without waiting for a pod.
        self.volume = kubernetes.core.v1.PersistentVolume(
            f"{name}-volume",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                # Cluster-scoped: the namespace in the name keeps two platforms on one cluster apart.
                name=namespace.apply(lambda ns: f"{ns}-{MYSQL_DATA_CLAIM}"),
                labels={"app.kubernetes.io/part-of": "mlflow-aks", "app.kubernetes.io/component": "database"},
            ),
            spec=kubernetes.core.v1.PersistentVolumeSpecArgs(
                capacity={"storage": f"{args.disk_size_gib}Gi"},
                access_modes=["ReadWriteOnce"],
                # Deleting the claim or this object never deletes the disk (or its data).
                persistent_volume_reclaim_policy="Retain",
                storage_class_name="",
                claim_ref=kubernetes.core.v1.ObjectReferenceArgs(namespace=namespace, name=MYSQL_DATA_CLAIM),
                csi=kubernetes.core.v1.CSIPersistentVolumeSourceArgs(
                    driver="disk.csi.azure.com",
                    volume_handle=args.disk_id,
                    volume_attributes={"fsType": "ext4"},
                ),
            ),
            opts=k8s,
        )
        self.claim = kubernetes.core.v1.PersistentVolumeClaim(
            f"{name}-claim",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=MYSQL_DATA_CLAIM,
                namespace=namespace,
                labels={"app.kubernetes.io/part-of": "mlflow-aks", "app.kubernetes.io/component": "database"},
            ),
            spec=kubernetes.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteOnce"],
                storage_class_name="",
                volume_name=self.volume.metadata.apply(lambda metadata: metadata.name),
                # Fixed: a static claim cannot be resized, and the volume behind it holds at least this.
                resources=kubernetes.core.v1.VolumeResourceRequirementsArgs(
                    requests={"storage": f"{MYSQL_CLAIM_GIB}Gi"}
                ),
            ),
            opts=k8s,
        )
        self.claim_name = self.claim.metadata.apply(lambda metadata: metadata.name)

        self.register_outputs({"claimName": self.claim_name})
