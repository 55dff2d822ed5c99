"""`exposure: public` on Azure (issue 10.1), under mocks: the static public IP both public Services
share, its DNS name (the certificate's and the tracking URL's), the cluster identity's right to put it
in the load balancer, and the order that lets `pulumi destroy` delete it."""

from __future__ import annotations

import pytest
from pulumi_mocks import CLUSTER_PRINCIPAL_ID, SUBSCRIPTION_ID, plain, run_program

from components import roles

PUBLIC = {"exposure": "public", "allowedSourceRanges": ["203.0.113.0/24"]}
IP = "azure-native:network:PublicIPAddress"
ROLE = "azure-native:authorization:RoleAssignment"


def _network_grants(run):
    return [r for r in run.of_type(ROLE) if r.inputs["roleDefinitionId"].endswith(roles.NETWORK_CONTRIBUTOR)]


@pytest.fixture(scope="module")
def public():
    return run_program(PUBLIC)


def test_one_static_standard_ip_with_the_stack_dns_label(public):
    ip = public.one(IP)
    assert ip.inputs["sku"] == {"name": "Standard", "tier": "Regional"}
    assert ip.inputs["publicIPAllocationMethod"] == "Static"
    assert ip.inputs["publicIPAddressVersion"] == "IPv4"
    assert ip.inputs["resourceGroupName"] == "mlflow-platform"
    assert ip.inputs["location"] == "westeurope"
    label = ip.inputs["dnsSettings"]["domainNameLabel"]
    assert label.startswith("mlflow-mlflow-") and len(label) == len("mlflow-mlflow-") + 6
    values = plain(public.named("mlflow-setup").inputs["values"])
    assert values["exposure"]["hostname"] == f"{label}.westeurope.cloudapp.azure.com"
    assert public.exports["trackingUrl"] == f"https://{label}.westeurope.cloudapp.azure.com"


def test_cluster_identity_may_join_it_before_the_services_exist(public):
    [grant] = _network_grants(public)
    group = public.one("azure-native:resources:ResourceGroup", "groups-platform")
    assert grant.inputs["principalId"] == CLUSTER_PRINCIPAL_ID
    assert grant.inputs["principalType"] == "ServicePrincipal"
    # The IP's own group, which holds no other network resource (the cluster's nodes are elsewhere).
    platform_id = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/mlflow-platform"
    assert grant.inputs["scope"] == group.outputs["id"] == platform_id
    assert grant.inputs["roleDefinitionId"] == (
        f"/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/"
        f"{roles.NETWORK_CONTRIBUTOR}"
    )
    setup = public.named("mlflow-setup")
    assert any(dep.endswith(f"::{grant.name}") for dep in setup.options["dependencies"])


def test_cluster_comes_after_the_ip_so_destroy_deletes_it_first(public):
    ip = public.one(IP)
    cluster = public.one("azure-native:containerservice:ManagedCluster")
    assert any(dep.endswith(f"::{ip.name}") for dep in cluster.options["dependencies"])
    # Nothing makes the IP wait for the cluster (which would reverse the delete order).
    assert not any("ManagedCluster" in dep for dep in ip.options["dependencies"])


def test_dns_label_keeps_the_suffix_stacks_had_before_the_endpoint_moved(public):
    [suffix] = [r for r in public.of_type("random:index/randomString:RandomString") if "dns-suffix" in r.name]
    aliases = suffix.options["aliases"]
    # Its earlier home: the MlflowReleases component named "mlflow", as resource "mlflow-dns-suffix".
    assert any("mlflow-dns-suffix" in alias and "MlflowReleases" in alias for alias in aliases), aliases


def test_acme_directory_reaches_the_terminator():
    staging = "https://acme-staging-v02.api.letsencrypt.org/directory"
    run = run_program({**PUBLIC, "acmeDirectory": staging})
    assert plain(run.named("mlflow-setup").inputs["values"])["tls"]["acmeDirectory"] == staging


def test_private_exposure_has_no_public_address():
    run = run_program({})
    assert run.of_type(IP) == []
    assert _network_grants(run) == []
    assert run.exports["trackingUrl"].startswith("http://mlflow-tracking.")
