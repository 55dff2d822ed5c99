"""Run the Pulumi program (`__main__.py`) under `pulumi.runtime.set_mocks` and record what it declares.

`run_program(config)` runs the whole program in a fresh mock runtime (new monitor, new root stack,
config replaced) and returns a `ProgramRun`: every registered resource with its inputs, every invoke,
and the stack exports resolved together with their secretness. Nothing carries over between runs.

The mocks echo inputs back as outputs (camelCase keys, as the engine would) and add the few computed
outputs the program reads: ids, names, the cluster's OIDC issuer and kubelet identity, login server,
client ids, passwords and client secrets, random strings and UUIDs, image digests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import runpy
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as pulumi_settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT = "mlflow-aks"
STACK = "dev"
SUBSCRIPTION_ID = "00000000-0000-0000-0000-000000000001"
TENANT_ID = "00000000-0000-0000-0000-0000000000aa"
DEPLOYING_USER_OBJECT_ID = "00000000-0000-0000-0000-0000000000bb"
OIDC_ISSUER_URL = "https://westeurope.oic.prod-aks.azure.com/tenant/issuer/"
KUBELET_OBJECT_ID = "00000000-0000-0000-0000-00000000c0be"
CLUSTER_PRINCIPAL_ID = "00000000-0000-0000-0000-0000000c1a57"
STORAGE_KEY = "bW9jay1zdG9yYWdlLWtleQ=="

API_SERVER = "https://mlflow-abc123.hcp.westeurope.azmk8s.io:443"
API_SERVER_CA = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCm1vY2sKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
# What listClusterUserCredential returns for an Entra ID cluster: the exec format with a device-code
# login (pulumi/pulumi-azure-native#2399). The program keeps only the cluster entry.
KUBECONFIG = f"""apiVersion: v1
kind: Config
clusters:
- name: mlflow-aks
  cluster:
    server: {API_SERVER}
    certificate-authority-data: {API_SERVER_CA}
contexts:
- name: mlflow-aks
  context: {{cluster: mlflow-aks, user: clusterUser_mlflow-platform_mlflow-aks}}
current-context: mlflow-aks
users:
- name: clusterUser_mlflow-platform_mlflow-aks
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: kubelogin
      args: [get-token, --environment, AzurePublicCloud, --server-id, 6dae42f8-4368-4678-94ff-3960e28e3630,
             --client-id, 80faf920-1908-4b52-b5ef-a8e7bedfc67a, --tenant-id, {TENANT_ID}, --login, devicecode]
"""
# The retention Azure reports on a kept backups container: the Pulumi.yaml default of backupRetentionDays,
# what the stack that kept it had (RecordingMocks takes another, 0 for a container kept without one).
KEPT_BACKUPS_RETENTION_DAYS = 30
# The stack's Operators ledger (components/operators.py), a dynamic resource with state of its own.
OPERATORS_TYPE = "pulumi-python:dynamic/mlflow-aks:Operators"
# The tools `pulumi up` needs on PATH (components/cluster_access.py), as a mocked run finds them.
TOOLS_ON_PATH = ("kubelogin", "az")
# This machine's public address as a mocked run detects it (components/deployer_address.py): inside the
# ranges the tests authorize (203.0.113.0/24), and never looked up on the network.
DEPLOYER_ADDRESS = "203.0.113.10"

# The input that carries each azure-native resource's explicit Azure name.
_NAME_KEYS = {
    "azure-native:resources:ResourceGroup": "resourceGroupName",
    "azure-native:operationalinsights:Workspace": "workspaceName",
    "azure-native:containerregistry:Registry": "registryName",
    "azure-native:storage:StorageAccount": "accountName",
    "azure-native:storage:BlobContainer": "containerName",
    "azure-native:storage:FileShare": "shareName",
    "azure-native:containerservice:ManagedCluster": "resourceName",
    "azure-native:containerservice:AgentPool": "agentPoolName",
    "azure-native:managedidentity:UserAssignedIdentity": "resourceName",
    "azure-native:managedidentity:FederatedIdentityCredential": "federatedIdentityCredentialResourceName",
    "azure-native:compute:Disk": "diskName",
    "azure-native:storage:ManagementPolicy": "managementPolicyName",
    "azure-native:storage:BlobServiceProperties": "blobServicesName",
    "azure-native:storage:BlobContainerImmutabilityPolicy": "immutabilityPolicyName",
    "azure-native:authorization:ManagementLockAtResourceGroupLevel": "lockName",
    "azure-native:network:PublicIPAddress": "publicIpAddressName",
    "azure-native:network:VirtualNetwork": "virtualNetworkName",
    "azure-native:privatedns:PrivateZone": "privateZoneName",
    "azure-native:privatedns:VirtualNetworkLink": "virtualNetworkLinkName",
    "azure-native:dbformysql:Server": "serverName",
    "azure-native:dbformysql:Database": "databaseName",
    "azure-native:dbformysql:Configuration": "configurationName",
}


def storage_key(account_name: str) -> str:
    """The key listStorageAccountKeys returns for `account_name`: each account has its own, so a test can
    tell which account's key went where."""
    return base64.b64encode(f"{STORAGE_KEY}:{account_name}".encode()).decode()


def _guid(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"


def is_secret(value: Any) -> bool:
    """Whether a mock-recorded input value is a Pulumi secret."""
    return rpc.is_rpc_secret(value)


def plain(value: Any) -> Any:
    """A recorded input with every secret wrapper removed (recursively)."""
    if rpc.is_rpc_secret(value):
        return plain(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def contains_secret(value: Any) -> bool:
    """Whether a recorded input is, or holds anywhere inside it, a Pulumi secret."""
    if rpc.is_rpc_secret(value):
        return True
    if isinstance(value, dict):
        return any(contains_secret(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_secret(v) for v in value)
    return False


@dataclass
class Registered:
    """One resource the program declared."""

    type: str
    name: str
    inputs: dict[str, Any]
    provider: str | None
    custom: bool
    id: str
    outputs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    """Resource options from the registration: retainOnDelete, protect, importId, ignoreChanges,
    replaceOnChanges, deleteBeforeReplace, additionalSecretOutputs, dependencies, parent."""

    @property
    def plain_inputs(self) -> dict[str, Any]:
        return plain(self.inputs)


@dataclass
class ProgramRun:
    """What one mocked run of the program declared and exported."""

    resources: list[Registered]
    calls: list[pulumi_mocks.MockCallArgs]
    exports: dict[str, Any]
    secret_exports: set[str]
    detected: int = 0
    """How many times the program detected this machine's public address."""

    def of_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> Registered:
        matches = [r for r in self.of_type(type_) if name is None or r.name == name]
        assert len(matches) == 1, f"expected one {type_} {name or ''}, found {[r.name for r in matches]}"
        return matches[0]

    def named(self, name: str) -> Registered:
        matches = [r for r in self.resources if r.name == name]
        assert len(matches) == 1, f"expected one resource named {name}, found {len(matches)}"
        return matches[0]

    def type_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.resources:
            counts[r.type] = counts.get(r.type, 0) + 1
        return counts


def _computed_outputs(type_: str, name: str, inputs: dict[str, Any], id_: str) -> dict[str, Any]:
    """Outputs the real provider would compute and the program reads."""
    explicit = plain(inputs.get(_NAME_KEYS.get(type_, "")))
    out: dict[str, Any] = {"name": explicit or name}
    if type_.startswith("azure-native:"):
        out["id"] = f"/subscriptions/{SUBSCRIPTION_ID}/mock/{type_.split(':')[-1]}/{out['name']}"
    # The data resources get ids of Azure's real shape: the disk's is the CSI volume handle (the chart's
    # schema checks it), and adopting kept data imports by exactly these ids.
    group = plain(inputs.get("resourceGroupName"))
    group_id = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{group}"
    account_id = f"{group_id}/providers/Microsoft.Storage/storageAccounts/{plain(inputs.get('accountName'))}"
    if type_ == "azure-native:resources:ResourceGroup":
        out["id"] = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{out['name']}"
    elif type_ == "azure-native:storage:StorageAccount":
        out["id"] = account_id
    elif type_ == "azure-native:storage:BlobContainer":
        out["id"] = f"{account_id}/blobServices/default/containers/{out['name']}"
    elif type_ == "azure-native:storage:FileShare":
        out["id"] = f"{account_id}/fileServices/default/shares/{out['name']}"
    elif type_ == "azure-native:compute:Disk":
        out["id"] = f"{group_id}/providers/Microsoft.Compute/disks/{out['name']}"
    elif type_ == "azure-native:storage:ManagementPolicy":
        out["id"] = f"{account_id}/managementPolicies/{out['name']}"
    elif type_ == "azure-native:storage:BlobServiceProperties":
        out["id"] = f"{account_id}/blobServices/{out['name']}"
    elif type_ == "azure-native:storage:BlobContainerImmutabilityPolicy":
        container_id = f"{account_id}/blobServices/default/containers/{plain(inputs.get('containerName'))}"
        out["id"] = f"{container_id}/immutabilityPolicies/{out['name']}"
    elif type_ == "azure-native:authorization:ManagementLockAtResourceGroupLevel":
        out["id"] = f"{group_id}/providers/Microsoft.Authorization/locks/{out['name']}"
    elif type_ == "azure-native:network:PublicIPAddress":
        out["id"] = f"{group_id}/providers/Microsoft.Network/publicIPAddresses/{out['name']}"
        out["ipAddress"] = "203.0.113.80"
    elif type_ == "azure-native:network:VirtualNetwork":
        out["id"] = f"{group_id}/providers/Microsoft.Network/virtualNetworks/{out['name']}"
    elif type_ == "azure-native:privatedns:PrivateZone":
        out["id"] = f"{group_id}/providers/Microsoft.Network/privateDnsZones/{out['name']}"
    elif type_ == "azure-native:privatedns:VirtualNetworkLink":
        zone = plain(inputs.get("privateZoneName"))
        out["id"] = (
            f"{group_id}/providers/Microsoft.Network/privateDnsZones/{zone}/virtualNetworkLinks/{out['name']}"
        )
    elif type_ == "azure-native:dbformysql:Server":
        out["id"] = f"{group_id}/providers/Microsoft.DBforMySQL/flexibleServers/{out['name']}"
        out["fullyQualifiedDomainName"] = f"{out['name']}.mysql.database.azure.com"
    elif type_ in ("azure-native:dbformysql:Database", "azure-native:dbformysql:Configuration"):
        server_id = (
            f"{group_id}/providers/Microsoft.DBforMySQL/flexibleServers/{plain(inputs.get('serverName'))}"
        )
        kind = "databases" if type_.endswith(":Database") else "configurations"
        out["id"] = f"{server_id}/{kind}/{out['name']}"
    if type_ == "azure-native:containerservice:ManagedCluster":
        out["identity"] = {**plain(inputs.get("identity", {})), "principalId": CLUSTER_PRINCIPAL_ID}
        out["oidcIssuerProfile"] = {"enabled": True, "issuerURL": OIDC_ISSUER_URL}
        out["identityProfile"] = {
            "kubeletidentity": {
                "objectId": KUBELET_OBJECT_ID,
                "clientId": _guid("kubelet-client"),
                "resourceId": "/mock/kubelet",
            }
        }
    elif type_ == "azure-native:containerregistry:Registry":
        out["loginServer"] = f"{out['name']}.azurecr.io"
    elif type_ == "azure-native:managedidentity:UserAssignedIdentity":
        out.update(
            clientId=_guid(f"{name}-client"), principalId=_guid(f"{name}-principal"), tenantId=TENANT_ID
        )
    elif type_ == "azuread:index/application:Application":
        out.update(clientId=_guid(f"{name}-client"), objectId=_guid(f"{name}-object"))
    elif type_ == "azuread:index/servicePrincipal:ServicePrincipal":
        object_id = _guid(f"{name}-object")
        out.update(objectId=object_id, id=f"/servicePrincipals/{object_id}")
    elif type_ == "azuread:index/servicePrincipalPassword:ServicePrincipalPassword":
        out["value"] = f"sp-password-{_guid(name)}"
    elif type_ == "azuread:index/applicationPassword:ApplicationPassword":
        out["value"] = f"app-secret-{_guid(name)}"
    elif type_ == "random:index/randomUuid:RandomUuid":
        out["result"] = _guid(f"{name}-uuid")
    elif type_ in ("random:index/randomString:RandomString", "random:index/randomPassword:RandomPassword"):
        length = int(plain(inputs.get("length", 16)))
        out["result"] = (hashlib.sha256(name.encode()).hexdigest() * 4)[:length]
    elif type_ == "random:index/randomBytes:RandomBytes":
        raw = (hashlib.sha512(name.encode()).digest() * 4)[: int(plain(inputs.get("length", 32)))]
        out.update(base64=base64.b64encode(raw).decode(), hex=raw.hex())
    elif type_ == "docker:index/image:Image":
        image_name = plain(inputs.get("imageName", name))
        digest = hashlib.sha256(image_name.encode()).hexdigest()
        out["repoDigest"] = f"{str(image_name).split(':')[0]}@sha256:{digest}"
        out["imageName"] = image_name
    return out


class RecordingMocks(pulumi.runtime.Mocks):
    """Echo inputs back, add computed outputs, and record every resource and invoke."""

    def __init__(
        self,
        extra_outputs: Callable[[pulumi_mocks.MockResourceArgs], dict] | None = None,
        deploying_principal_type: str = "User",
        kept_backups_retention_days: int = KEPT_BACKUPS_RETENTION_DAYS,
        caller_object_id: str = DEPLOYING_USER_OBJECT_ID,
        principal_types: dict[str, str] | None = None,
        operators_state: dict[str, Any] | None = None,
    ):
        self.resources: list[Registered] = []
        self.calls: list[pulumi_mocks.MockCallArgs] = []
        self._extra_outputs = extra_outputs
        # What Entra ID says the principal running `pulumi up` is: a person, or a CI service principal.
        self.deploying_principal_type = deploying_principal_type
        # Who runs `pulumi up` (both client configs' objectId), and what Entra ID says other principals are.
        self.caller_object_id = caller_object_id
        self.principal_types = {caller_object_id: deploying_principal_type, **(principal_types or {})}
        # The Operators ledger as an earlier run left it in the stack (None: a new stack). The engine's
        # diff/update is played with the real provider; `operators_outputs` is what this run leaves.
        self.operators_state = operators_state
        self.operators_outputs: dict[str, Any] | None = None
        # The retention policy Azure reports on a kept backups container (0: none, an older stack's).
        self.kept_backups_retention_days = kept_backups_retention_days

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        id_ = f"{args.name}-id"
        outputs = {**args.inputs, **_computed_outputs(args.typ, args.name, args.inputs, id_)}
        if args.typ == OPERATORS_TYPE:
            outputs.update(self._operators(args.inputs))
        if self._extra_outputs:
            outputs.update(self._extra_outputs(args))
        self.resources.append(
            Registered(
                type=args.typ,
                name=args.name,
                inputs=dict(args.inputs),
                provider=args.provider or None,
                custom=bool(args.custom),
                id=outputs.get("id", id_),
                outputs=outputs,
            )
        )
        return [outputs.get("id", id_), outputs]

    def _operators(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """The ledger's outputs as the engine would make them: create on a new stack, else diff and
        update (or keep the state) with the provider's own code."""
        from components.operators import OperatorsProvider

        news = {key: value for key, value in plain(inputs).items() if not key.startswith("__")}
        provider = OperatorsProvider()
        if self.operators_state is None:
            outs = provider.create(news).outs
        elif provider.diff("operators", self.operators_state, news).changes:
            outs = provider.update("operators", self.operators_state, news).outs
        else:
            outs = dict(self.operators_state)
        self.operators_outputs = outs
        return outs

    def call(self, args: pulumi_mocks.MockCallArgs):
        self.calls.append(args)
        if args.token == "azure-native:authorization:getClientConfig":
            return {
                "clientId": _guid("cli-client"),
                "objectId": self.caller_object_id,
                "subscriptionId": SUBSCRIPTION_ID,
                "tenantId": TENANT_ID,
            }
        if args.token == "azuread:index/getClientConfig:getClientConfig":
            return {
                "clientId": _guid("cli-client"),
                "objectId": self.caller_object_id,
                "tenantId": TENANT_ID,
            }
        if args.token == "azuread:index/getDirectoryObject:getDirectoryObject":
            object_id = args.args["objectId"]
            assert object_id in self.principal_types, f"unexpected directory lookup of {object_id}"
            return {"id": object_id, "objectId": object_id, "type": self.principal_types[object_id]}
        if args.token == "azure-native:containerservice:listManagedClusterUserCredentials":
            encoded = base64.b64encode(KUBECONFIG.encode()).decode()
            return {"kubeconfigs": [{"name": "clusterUser", "value": encoded}]}
        if args.token == "azure-native:storage:getBlobContainerImmutabilityPolicy":
            # Azure answers for a container without a policy too: 0 days (azure-native's default state).
            return {
                "name": args.args["immutabilityPolicyName"],
                "immutabilityPeriodSinceCreationInDays": self.kept_backups_retention_days,
                "state": "Unlocked",
            }
        if args.token == "azure-native:storage:listStorageAccountKeys":
            value = storage_key(args.args["accountName"])
            return {"keys": [{"keyName": "key1", "value": value, "permissions": "FULL"}]}
        raise AssertionError(f"unexpected invoke {args.token} in the mocked program")


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The SDK's mock monitor, also keeping the resource options `MockResourceArgs` leaves out."""

    def __init__(self, mocks: RecordingMocks):
        super().__init__(mocks)
        self.options: dict[tuple[str, str], dict[str, Any]] = {}

    def RegisterResource(self, request):
        # Registrations arrive on worker threads; key by (type, name), unique within this program.
        self.options[(request.type, request.name)] = {
            "retainOnDelete": request.retainOnDelete if request.HasField("retainOnDelete") else False,
            "protect": request.protect if request.HasField("protect") else False,
            "importId": request.importId,
            "ignoreChanges": list(request.ignoreChanges),
            "replaceOnChanges": list(request.replaceOnChanges),
            "deleteBeforeReplace": request.deleteBeforeReplace,
            "additionalSecretOutputs": list(request.additionalSecretOutputs),
            "dependencies": list(request.dependencies),
            "parent": request.parent,
            # Earlier names of the resource (URNs, or parent+name specs), so that a move keeps its state.
            "aliases": [*request.aliasURNs, *(str(a) for a in request.aliases)],
        }
        return super().RegisterResource(request)


@dataclass
class _Resolved:
    values: dict[str, Any] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)


def config_values(config: dict[str, Any]) -> dict[str, str]:
    """Stack config as the engine hands it to the program: `project:key` -> string (JSON for non-strings)."""
    return {
        f"{PROJECT}:{key}": value if isinstance(value, str) else json.dumps(value)
        for key, value in config.items()
    }


def run_program(
    config: dict[str, Any] | None = None,
    *,
    program: Path = REPO_ROOT / "__main__.py",
    mocks: RecordingMocks | None = None,
    preview: bool = False,
    tools_on_path: Collection[str] = TOOLS_ON_PATH,
    deployer_address: str | Exception = DEPLOYER_ADDRESS,
) -> ProgramRun:
    """Run `program` once in a fresh mock runtime with `config` as the stack config.

    `tools_on_path`: what the program's prerequisite check finds on PATH (nothing is looked up for real,
    so the tests need no kubelogin or az). `deployer_address`: what detecting this machine's public
    address returns, or the exception it raises; `detected` in the returned run counts the detections.
    """
    # The program's own modules (program_snapshot puts them first).
    from components import cluster_access
    from components import deployer_address as address_check

    mocks = mocks or RecordingMocks()
    pulumi_settings.ROOT.set(None)
    pulumi.runtime.set_all_config(config_values(config or {}), secret_keys=[])
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=STACK, preview=preview, monitor=monitor)
    pulumi_settings.SETTINGS.rpc_manager.clear()
    pulumi_settings.SETTINGS.outputs.clear()

    detections: list[str | Exception] = []

    def detect() -> str:
        detections.append(deployer_address)
        if isinstance(deployer_address, Exception):
            raise deployer_address
        return deployer_address

    real_find_tool, real_detect = cluster_access.find_tool, address_check.detect_public_address
    cluster_access.find_tool = lambda tool: f"/usr/local/bin/{tool}" if tool in tools_on_path else None
    address_check.detect_public_address = detect
    try:
        _sync_await(run_pulumi_func(lambda: runpy.run_path(str(program), run_name="__main__")))
    finally:
        cluster_access.find_tool = real_find_tool
        address_check.detect_public_address = real_detect

    for resource in mocks.resources:
        resource.options = monitor.options[(resource.type, resource.name)]
    resolved = _Resolved()
    stack = pulumi_settings.get_root_resource()
    for key, value in stack.outputs.items():  # type: ignore[union-attr]
        output = pulumi.Output.from_input(value)
        resolved.values[key] = _sync_await(output.future())
        if _sync_await(output.is_secret()):
            resolved.secrets.add(key)
    return ProgramRun(mocks.resources, mocks.calls, resolved.values, resolved.secrets, len(detections))
