"""The public endpoint's address (`exposure: public`): one static Standard public IP with a DNS label,
`<prefix>-mlflow-<suffix>.<region>.cloudapp.azure.com`, in the platform resource group.

Both public Services of charts/mlflow_setup (HTTPS from the allowed ranges, port 80 from everyone for
the ACME challenge and the redirect) share it by name, so the name and the certificate issued for it do
not change when the Services are recreated. The cluster's identity may join it: AKS's load balancer
puts it in its frontend (https://learn.microsoft.com/azure/aks/static-ip: Network Contributor on the
IP's resource group, which holds no other network resource).

Declare it before the cluster and make the cluster depend on it: `pulumi destroy` then deletes the
cluster (and its load balancer, which holds the IP) before the IP, which Azure refuses to delete while a
load balancer uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_random as random
from pulumi_azure_native import authorization, network

from components import roles

# The DNS label's random part (labels are unique per region). Until issue 10 it belonged to the
# MlflowReleases component named "mlflow": the alias keeps the label, and so the URL, of such stacks.
SUFFIX_LENGTH = 6
PREVIOUS_SUFFIX_PARENT = ("mlflow-aks:app:MlflowReleases", "mlflow")


def hostname(label: str, location: str) -> str:
    """The public IP's DNS name (Azure's format for a domain name label)."""
    return f"{label}.{location}.cloudapp.azure.com"


@dataclass
class PublicEndpointArgs:
    resource_group_name: pulumi.Input[str]
    """Resource group of the IP (the platform group)."""
    location: str
    """Azure region (also part of the DNS name)."""
    name_prefix: str
    """Prefix of the IP's name and DNS label."""


class PublicEndpoint(pulumi.ComponentResource):
    address: network.PublicIPAddress
    ip_name: pulumi.Output[str]
    """Name of the public IP (`exposure.publicIP.name`)."""
    resource_group_name: pulumi.Output[str]
    """Its resource group (`exposure.publicIP.resourceGroup`)."""
    dns_label: pulumi.Output[str]
    hostname: pulumi.Output[str]
    """`<label>.<region>.cloudapp.azure.com`: the certificate's name and the tracking URL's host."""
    ip_address: pulumi.Output[str]
    join_access: authorization.RoleAssignment | None
    """Network Contributor of the cluster identity on the IP's group (after `grant_cluster`)."""

    def __init__(self, name: str, args: PublicEndpointArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:network:PublicEndpoint", name, None, opts)
        self._name = name
        suffix = random.RandomString(
            f"{name}-dns-suffix",
            length=SUFFIX_LENGTH,
            upper=False,
            special=False,
            opts=pulumi.ResourceOptions(
                parent=self,
                aliases=[
                    pulumi.Alias(
                        name=f"{PREVIOUS_SUFFIX_PARENT[1]}-dns-suffix",
                        parent=pulumi.create_urn(PREVIOUS_SUFFIX_PARENT[1], PREVIOUS_SUFFIX_PARENT[0]),
                    )
                ],
            ),
        )
        self.dns_label = suffix.result.apply(lambda s: f"{args.name_prefix}-mlflow-{s}")
        self.address = network.PublicIPAddress(
            f"{name}-ip",
            public_ip_address_name=f"{args.name_prefix}-tracking-ip",
            resource_group_name=args.resource_group_name,
            location=args.location,
            # Standard: what AKS's Standard load balancer accepts; static: the name's address never moves.
            sku=network.PublicIPAddressSkuArgs(name="Standard", tier="Regional"),
            public_ip_allocation_method="Static",
            public_ip_address_version="IPv4",
            dns_settings=network.PublicIPAddressDnsSettingsArgs(domain_name_label=self.dns_label),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.ip_name = self.address.name
        self.resource_group_name = pulumi.Output.from_input(args.resource_group_name)
        self.hostname = self.dns_label.apply(lambda label: hostname(label, args.location))
        self.ip_address = self.address.ip_address.apply(lambda ip: ip or "")
        self.join_access = None

        self.register_outputs(
            {"ipName": self.ip_name, "hostname": self.hostname, "ipAddress": self.ip_address}
        )

    def grant_cluster(
        self,
        *,
        subscription_id: pulumi.Input[str],
        resource_group_id: pulumi.Input[str],
        cluster_principal_id: pulumi.Input[str],
    ) -> authorization.RoleAssignment:
        """Let the cluster's identity put the IP in its load balancer (the cluster comes after the IP)."""
        self.join_access = roles.assign_role(
            f"{self._name}-cluster-network",
            subscription_id=subscription_id,
            role=roles.NETWORK_CONTRIBUTOR,
            principal_id=cluster_principal_id,
            scope=resource_group_id,
            parent=self,
        )
        return self.join_access
