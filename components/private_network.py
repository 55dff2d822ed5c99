"""`database: flexibleServer`: the virtual network the cluster and the flexible server share, in the data
resource group, and the private DNS zone that names the server inside it.

Azure Database for MySQL Flexible Server with private access lives in a subnet delegated to it and is
found through a private DNS zone linked to the virtual network; it has no public endpoint at all
(https://learn.microsoft.com/azure/mysql/flexible-server/concepts-networking-vnet). So the program owns the
network: one address space, a subnet for the AKS nodes and one delegated to the server. The network is
kept with the data (protected, retained, imported when kept data is adopted): a subnet cannot be deleted
while a server is in it, and a retained server keeps its network. The cluster's identity gets Network
Contributor on its own subnet only (`grant_cluster`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
from pulumi_azure_native import authorization, network, privatedns

from components import roles
from components.kept_data import KeptData
from components.naming import CLUSTER_SUBNET, DATABASE_SUBNET, mysql_private_dns_zone, virtual_network_name

# Not AKS's overlay pod range (10.244.0.0/16) nor its service range (10.0.0.0/16), which must not overlap
# the network (https://learn.microsoft.com/azure/aks/azure-cni-overlay#ip-address-planning). Nodes take one
# address each from the first subnet; the server, and its standby with high availability, from the second.
ADDRESS_SPACE = "10.224.0.0/16"
CLUSTER_SUBNET_PREFIX = "10.224.0.0/20"
DATABASE_SUBNET_PREFIX = "10.224.16.0/24"
FLEXIBLE_SERVER_DELEGATION = "Microsoft.DBforMySQL/flexibleServers"


@dataclass
class PrivateNetworkArgs:
    resource_group_name: pulumi.Input[str]
    """Resource group of the network and the zone: the data group (they outlive the cluster)."""
    location: str
    """Azure region (the cluster's and the server's)."""
    name_prefix: str
    """Start of the network's and the zone's names."""
    retain_on_delete: bool
    """Leave the network and the zone in Azure on `pulumi destroy`, with the server that needs them."""
    protect: bool
    """Protect them: Pulumi refuses to delete or replace them."""
    kept_data: KeptData | None
    """Data kept by an earlier stack: import its network, zone and link instead of creating them."""
    depends_on: list[pulumi.Resource] = field(default_factory=list)
    """The data group's lock: `pulumi destroy --exclude-protected` keeps it with them."""


class PrivateNetwork(pulumi.ComponentResource):
    virtual_network: network.VirtualNetwork
    dns_zone: privatedns.PrivateZone
    dns_zone_link: privatedns.VirtualNetworkLink
    """The zone's link to the network: the server needs it before it is created."""
    cluster_access: authorization.RoleAssignment | None
    """Network Contributor of the cluster's identity on its subnet (`grant_cluster`)."""
    cluster_subnet_id: pulumi.Output[str]
    """Subnet of the AKS node pools."""
    database_subnet_id: pulumi.Output[str]
    """Subnet delegated to the flexible server."""
    database_subnet_prefix: str
    """Address range of that subnet: the chart lets the tracking server reach it on 3306 only."""
    dns_zone_id: pulumi.Output[str]

    def __init__(self, name: str, args: PrivateNetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("mlflow-aks:foundation:PrivateNetwork", name, None, opts)
        self._name = name
        kept = args.kept_data

        def data_options(import_id: str | None, depends_on: list[pulumi.Resource]) -> pulumi.ResourceOptions:
            return pulumi.ResourceOptions(
                parent=self,
                retain_on_delete=args.retain_on_delete,
                protect=args.protect,
                import_=import_id,
                depends_on=depends_on,
            )

        # The subnets are declared inside the network (not as Subnet resources): one resource, kept whole.
        self.virtual_network = network.VirtualNetwork(
            f"{name}-vnet",
            virtual_network_name=virtual_network_name(args.name_prefix),
            resource_group_name=args.resource_group_name,
            location=args.location,
            address_space=network.AddressSpaceArgs(address_prefixes=[ADDRESS_SPACE]),
            subnets=[
                network.SubnetArgs(name=CLUSTER_SUBNET, address_prefix=CLUSTER_SUBNET_PREFIX),
                network.SubnetArgs(
                    name=DATABASE_SUBNET,
                    address_prefix=DATABASE_SUBNET_PREFIX,
                    delegations=[
                        network.DelegationArgs(
                            name="flexible-server", service_name=FLEXIBLE_SERVER_DELEGATION
                        )
                    ],
                ),
            ],
            opts=data_options(kept.virtual_network_id if kept else None, args.depends_on),
        )
        self.dns_zone = privatedns.PrivateZone(
            f"{name}-dns-zone",
            private_zone_name=mysql_private_dns_zone(args.name_prefix),
            resource_group_name=args.resource_group_name,
            location="global",
            opts=data_options(kept.private_dns_zone_id if kept else None, args.depends_on),
        )
        # Resolution only: the server registers its own record; nothing in the network auto-registers.
        self.dns_zone_link = privatedns.VirtualNetworkLink(
            f"{name}-dns-link",
            virtual_network_link_name=virtual_network_name(args.name_prefix),
            private_zone_name=self.dns_zone.name,
            resource_group_name=args.resource_group_name,
            location="global",
            registration_enabled=False,
            virtual_network=privatedns.SubResourceArgs(id=self.virtual_network.id),
            opts=data_options(kept.dns_zone_link_id if kept else None, args.depends_on),
        )
        self.cluster_access = None
        self.cluster_subnet_id = self.virtual_network.id.apply(
            lambda vnet: f"{vnet}/subnets/{CLUSTER_SUBNET}"
        )
        self.database_subnet_id = self.virtual_network.id.apply(
            lambda vnet: f"{vnet}/subnets/{DATABASE_SUBNET}"
        )
        self.database_subnet_prefix = DATABASE_SUBNET_PREFIX
        self.dns_zone_id = self.dns_zone.id
        self._retain_on_delete = args.retain_on_delete

        self.register_outputs(
            {
                "clusterSubnetId": self.cluster_subnet_id,
                "databaseSubnetId": self.database_subnet_id,
                "dnsZoneId": self.dns_zone_id,
            }
        )

    def grant_cluster(
        self, *, subscription_id: pulumi.Input[str], cluster_principal_id: pulumi.Input[str]
    ) -> authorization.RoleAssignment:
        """Network Contributor on the node subnet for the cluster's identity, which AKS asks for when the
        cluster is in a network of your own (https://learn.microsoft.com/azure/aks/use-managed-identity,
        "Add role assignment"): its cloud provider manages the nodes' load balancer there."""
        self.cluster_access = roles.assign_role(
            f"{self._name}-cluster-subnet",
            subscription_id=subscription_id,
            role=roles.NETWORK_CONTRIBUTOR,
            principal_id=cluster_principal_id,
            scope=self.cluster_subnet_id,
            parent=self,
            # Under the data group's CanNotDelete lock Azure refuses to delete it: destroy forgets it.
            retain_on_delete=self._retain_on_delete,
        )
        return self.cluster_access
