"""The public endpoint's certificate store: an Azure file share, in a storage account of its own in the
platform resource group, where the TLS terminator keeps its certificates, private keys and ACME account.

Why outside the `mlflow` Helm release: a claim the release makes is deleted, with the certificate on it,
by the atomic rollback of a failed install, by `helm uninstall` and by switching `exposure` to private
(the public templates leave the manifest). Each new start then asks Let's Encrypt for the same name
again, and it issues at most 5 certificates for one exact set of names in 7 days
(https://letsencrypt.org/docs/rate-limits/#new-certificates-per-exact-set-of-identifiers). This share is
Pulumi's, and exists whatever the exposure, so switching to private and back finds the certificate.
components/certificate_volume.py mounts it on the cluster.

Why an account of its own rather than a second share in the project files account
(components/project_share.py): the CSI driver mounts Azure Files with the account key, and a key opens
every share of its account. The project key sits in a Secret the kubelet reads to mount the share on
nodes where projects' code runs; the private key of the public name should not be one key away from there.

Not data: losing it costs one new certificate. So, like the project files account, it lives and dies
with the platform (no retain, no protect, no lock): everything short of `pulumi destroy` keeps it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_azure_native import storage

from components.naming import CERTIFICATES_SHARE, certificates_account_prefix, global_name_suffix

# Certificates, keys and the account take kilobytes; 1 GiB is the smallest quota of a standard share.
CERTIFICATES_QUOTA_GIB = 1


@dataclass
class CertificateShareArgs:
    resource_group_name: pulumi.Input[str]
    """Resource group of the account (the platform group)."""
    location: str
    """Azure region."""
    name_prefix: str
    """Start of the account name; a random suffix makes it globally unique."""
    sku: str
    """Replication SKU, e.g. Standard_LRS (the data account's)."""


class CertificateShare(pulumi.ComponentResource):
    account: storage.StorageAccount
    account_name: pulumi.Output[str]
    resource_group_name: pulumi.Output[str]
    share_name: pulumi.Output[str]
    quota_gib: int
    """Quota of the share: the capacity of its static volume."""
    account_key: pulumi.Output[str]
    """First access key of this account (secret): what the CSI driver mounts the share with."""

    def __init__(self, name: str, args: CertificateShareArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:foundation:CertificateShare", name, None, opts)

        suffix = global_name_suffix(name, self)
        self.account = storage.StorageAccount(
            f"{name}-account",
            account_name=suffix.apply(lambda s: f"{certificates_account_prefix(args.name_prefix)}{s}"),
            resource_group_name=args.resource_group_name,
            location=args.location,
            kind=storage.Kind.STORAGE_V2,
            sku=storage.SkuArgs(name=args.sku),
            enable_https_traffic_only=True,
            minimum_tls_version=storage.MinimumTlsVersion.TLS1_2,
            allow_blob_public_access=False,
            # The CSI driver mounts a static Azure Files volume with the name and key in a Secret
            # (https://learn.microsoft.com/azure/aks/azure-csi-files-storage-provision).
            allow_shared_key_access=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        share = storage.FileShare(
            f"{name}-share",
            share_name=CERTIFICATES_SHARE,
            account_name=self.account.name,
            resource_group_name=args.resource_group_name,
            share_quota=CERTIFICATES_QUOTA_GIB,
            enabled_protocols=storage.EnabledProtocols.SMB,
            opts=pulumi.ResourceOptions(parent=self),
        )
        keys = storage.list_storage_account_keys_output(
            account_name=self.account.name, resource_group_name=args.resource_group_name
        )

        self.account_name = self.account.name
        self.resource_group_name = pulumi.Output.from_input(args.resource_group_name)
        self.share_name = share.name
        self.quota_gib = CERTIFICATES_QUOTA_GIB
        self.account_key = pulumi.Output.secret(keys.keys[0].value)

        self.register_outputs(
            {"accountName": self.account_name, "shareName": self.share_name, "accountKey": self.account_key}
        )
