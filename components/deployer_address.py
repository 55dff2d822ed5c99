"""The API server's authorized ranges, checked against this machine before anything is created.

AKS drops every request to the API server from an address outside `apiServerAuthorizedIpRanges`, before
any sign-in (https://learn.microsoft.com/azure/aks/api-server-authorized-ip-ranges). A `pulumi up` from
outside them would create every Azure resource, wait out `cluster-access`'s 15 minutes, and fail there;
a later run from another network would fail inside Helm. So when the ranges are set, the program first
finds the public address the API server will see from here (config `deployerIpAddress`, or detected) and
stops at once, naming the key and the address, unless one of the ranges holds it. It runs on every
`pulumi preview` and `pulumi up`, so a laptop that changed networks is told before anything changes.
"""

from __future__ import annotations

import ipaddress
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

# Services that answer an HTTPS GET with the caller's public IPv4 address as plain text, tried in order.
# IPv4 endpoints: AKS authorizes IPv4 ranges only. urllib goes through HTTPS_PROXY like kubelogin, az and
# the Kubernetes provider do, so the address is the one those tools reach Azure from.
ADDRESS_SERVICES = ("https://api.ipify.org", "https://ipv4.icanhazip.com")
REQUEST_TIMEOUT_SECONDS = 10.0
KEY = "apiServerAuthorizedIpRanges"
ADDRESS_KEY = "deployerIpAddress"


class ApiServerRangesError(RuntimeError):
    """This machine is outside the authorized ranges, or its address could not be found; nothing was
    created. The message names the config keys and the address."""


def _ask(url: str) -> str:
    if not url.startswith("https://"):
        raise ValueError(f"not an https URL: {url}")
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_SECONDS) as response:  # noqa: S310 (checked)
        text = response.read(64).decode("ascii", "replace").strip()
    return str(ipaddress.IPv4Address(text))


def ask_services(services: Sequence[str] = ADDRESS_SERVICES) -> str:
    """This machine's public IPv4 address, from the first service that gives one; raise naming each
    failure when none does."""
    failures = []
    for url in services:
        try:
            return _ask(url)
        except (OSError, ValueError, urllib.error.URLError) as error:
            failures.append(f"{url}: {error}")
    raise LookupError("; ".join(failures))


# The test seam: the program detects the address with this (tests/pulumi_mocks.py replaces it, so no
# unit test reaches the network).
detect_public_address: Callable[[], str] = ask_services


def require_api_server_reach(ranges: Sequence[str], given: str | None) -> str | None:
    """With authorized ranges set, return the deployer's address once one of them holds it; raise
    ApiServerRangesError otherwise. No ranges: nothing to check, nothing detected (None)."""
    if not ranges:
        return None
    if given:
        address, source = given, f"config {ADDRESS_KEY}"
    else:
        try:
            address, source = detect_public_address(), f"detected; set {ADDRESS_KEY} if that is wrong"
        except Exception as error:  # any failure to detect stops the run: never a silent pass
            raise ApiServerRangesError(
                f"{KEY} is set, and this machine's public address could not be detected to check it "
                f"against them (nothing was created): {error}\n"
                f"Set the address the API server sees from here (your proxy's or VPN's egress address "
                f"if you use one): `pulumi config set {ADDRESS_KEY} <IPv4 address>`"
            ) from error
    networks = [ipaddress.ip_network(cidr) for cidr in ranges]
    if any(ipaddress.ip_address(address) in network for network in networks):
        return address
    raise ApiServerRangesError(
        f"{KEY} does not include this machine's public address {address} ({source}); nothing was "
        f"created. The API server drops every request from outside its ranges, so this run would fail "
        f"only once the cluster exists, after a 15-minute wait.\n"
        f"  {KEY}: {', '.join(ranges)}\n"
        f"Add it (`pulumi config set --path '{KEY}[{len(ranges)}]' {address}/32`), or run from a network "
        f"inside the ranges."
    )
