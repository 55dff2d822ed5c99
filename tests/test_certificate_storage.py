"""Where the public endpoint's certificate lives (issue 17.6), under Pulumi mocks: a file share in an
account of its own (components/certificate_share.py) and, on the cluster, the Secret, static volume and
claim the TLS terminator mounts (components/certificate_volume.py), all Pulumi's, none the release's.

The same objects, with the same inputs, exist whatever the exposure: switching to private and back is
no change to them, so the certificate Let's Encrypt issued is still there. Expected values come from the
config, from other recorded resources and from the chart's values.yaml, never from a stored run.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pulumi_mocks import REPO_ROOT, ProgramRun, contains_secret, is_secret, plain, run_program, storage_key

NAMESPACE = "ml-team"
CONFIGURATIONS = {
    "private": {"namespace": NAMESPACE},
    "public": {"namespace": NAMESPACE, "exposure": "public", "allowedSourceRanges": ["203.0.113.0/24"]},
}
ACCOUNT = "azure-native:storage:StorageAccount"
SHARE = "azure-native:storage:FileShare"
SECRET = "kubernetes:core/v1:Secret"
VOLUME = "kubernetes:core/v1:PersistentVolume"
CLAIM = "kubernetes:core/v1:PersistentVolumeClaim"
# The resources of the certificate store, by type and name.
STORE = {
    (ACCOUNT, "certificates-account"),
    (SHARE, "certificates-share"),
    ("random:index/randomString:RandomString", "certificates-suffix"),
    (SECRET, "mlflow-certificate-volume-secret"),
    (VOLUME, "mlflow-certificate-volume-volume"),
    (CLAIM, "mlflow-certificate-volume-claim"),
}
# Who the TLS terminator runs as: the tracking pod's user, which the program leaves at the chart's default.
CADDY_UID = yaml.safe_load((REPO_ROOT / "charts/mlflow_setup/values.yaml").read_text())["tracking"][
    "runAsUser"
]


@pytest.fixture(scope="module")
def runs() -> dict[str, ProgramRun]:
    return {name: run_program(config) for name, config in CONFIGURATIONS.items()}


@pytest.fixture(params=list(CONFIGURATIONS))
def run(request, runs) -> ProgramRun:
    return runs[request.param]


def _store(run: ProgramRun) -> dict[tuple[str, str], Any]:
    return {(r.type, r.name): r for r in run.resources if (r.type, r.name) in STORE}


def _mount_option(options: list[str], name: str) -> str:
    [value] = [o.split("=", 1)[1] for o in options if o.startswith(f"{name}=")]
    return value


def test_the_share_has_an_account_of_its_own_that_lives_with_the_platform(run):
    account, share = run.named("certificates-account"), run.named("certificates-share")
    suffix = run.named("certificates-suffix").outputs["result"]
    inputs = account.inputs
    assert inputs["accountName"] == f"mlflowtls{suffix}" and len(inputs["accountName"]) <= 24
    # Not the project files account: its key (in a Secret of the runs namespace) opens no private key.
    assert inputs["accountName"] not in {
        run.named(n).outputs["name"] for n in ("projects-account", "storage-account")
    }
    assert inputs["resourceGroupName"] == run.named("groups-platform").outputs["name"]
    assert inputs["sku"] == {"name": "Standard_LRS"}
    assert inputs["allowSharedKeyAccess"] is True  # the CSI driver's SMB mount takes the key
    assert inputs["enableHttpsTrafficOnly"] is True and inputs["minimumTlsVersion"] == "TLS1_2"
    assert inputs["allowBlobPublicAccess"] is False
    assert share.inputs["shareName"] == "mlflow-tls"
    assert share.inputs["accountName"] == account.outputs["name"]
    assert share.inputs["enabledProtocols"] == "SMB"
    assert share.inputs["shareQuota"] >= 1
    # Not data: `pulumi destroy` removes it, even with `dataRetention: retain` (the default).
    for resource in (account, share, run.named("certificates-suffix")):
        assert (resource.options["retainOnDelete"], resource.options["protect"]) == (False, False), (
            resource.name
        )
    assert run.exports["certificatesStorageAccount"] == account.outputs["name"]
    assert "certificatesStorageAccount" not in run.secret_exports


def test_the_csi_driver_mounts_it_with_that_account_key_kept_secret(run):
    account = run.named("certificates-account").outputs["name"]
    secret = run.named("mlflow-certificate-volume-secret").inputs
    assert secret["metadata"]["namespace"] == NAMESPACE
    assert secret["type"] == "Opaque"
    assert is_secret(secret["stringData"])
    assert plain(secret["stringData"]) == {
        "azurestorageaccountname": account,
        "azurestorageaccountkey": storage_key(account),
    }
    # That key goes nowhere else: not into the release's values (nor does the release mount the share).
    release_values = run.named("mlflow-setup").inputs["values"]
    assert contains_secret(release_values)
    assert storage_key(account) not in repr(plain(release_values))


def test_a_static_retained_volume_and_its_claim_mount_it_for_every_replica(run):
    account, share = run.named("certificates-account"), run.named("certificates-share")
    secret = run.named("mlflow-certificate-volume-secret").inputs["metadata"]
    volume = run.named("mlflow-certificate-volume-volume").inputs
    claim = run.named("mlflow-certificate-volume-claim").inputs
    spec, claim_spec = volume["spec"], claim["spec"]
    # Retain: deleting the claim never deletes the share (with Delete, the CSI driver would).
    assert spec["persistentVolumeReclaimPolicy"] == "Retain"
    assert spec["accessModes"] == claim_spec["accessModes"] == ["ReadWriteMany"]
    # Static on both sides, pre-bound both ways: no storage class provisions a share of its own.
    assert spec["storageClassName"] == claim_spec["storageClassName"] == ""
    assert spec["claimRef"] == {"namespace": NAMESPACE, "name": claim["metadata"]["name"]}
    assert claim["metadata"]["namespace"] == NAMESPACE
    assert claim_spec["volumeName"] == volume["metadata"]["name"]
    assert volume["metadata"]["name"].startswith(f"{NAMESPACE}-")  # cluster-scoped
    assert (
        spec["capacity"]
        == claim_spec["resources"]["requests"]
        == {"storage": f"{int(share.inputs['shareQuota'])}Gi"}
    )
    group = run.named("groups-platform").outputs["name"]
    assert spec["csi"] == {
        "driver": "file.csi.azure.com",
        "volumeHandle": f"{group}#{account.outputs['name']}#{share.outputs['name']}",
        "volumeAttributes": {"shareName": share.outputs["name"]},
        "nodeStageSecretRef": {"name": secret["name"], "namespace": secret["namespace"]},
    }


def test_only_the_terminator_s_user_reads_the_private_keys(run):
    options = run.named("mlflow-certificate-volume-volume").inputs["spec"]["mountOptions"]
    assert int(_mount_option(options, "uid")) == int(_mount_option(options, "gid")) == CADDY_UID
    # Owner only: no group or other bit on files (private keys) or directories.
    assert int(_mount_option(options, "file_mode"), 8) & 0o077 == 0
    assert int(_mount_option(options, "dir_mode"), 8) & 0o077 == 0
    assert int(_mount_option(options, "file_mode"), 8) & 0o600 == 0o600  # Caddy reads and writes them
    assert int(_mount_option(options, "dir_mode"), 8) & 0o700 == 0o700


def test_the_cluster_provider_makes_them(run):
    provider = run.one("pulumi:providers:kubernetes")
    for name in ("secret", "volume", "claim"):
        resource = run.named(f"mlflow-certificate-volume-{name}")
        assert resource.provider is not None
        assert resource.provider.endswith(f"::{provider.name}::{provider.id}"), resource.name


def test_the_release_mounts_the_claim_by_name_and_comes_after_it(runs):
    for name, run in runs.items():
        setup = run.named("mlflow-setup")
        claim = run.named("mlflow-certificate-volume-claim")
        assert any(dep.endswith(f"::{claim.name}") for dep in setup.options["dependencies"]), name
        values = plain(setup.inputs["values"])
        if name == "public":
            assert values["tls"]["storage"] == {"existingClaim": claim.inputs["metadata"]["name"]}
        else:  # no terminator to mount it, but the claim is there for the switch back
            assert "tls" not in values


def test_switching_exposure_changes_nothing_of_the_store(runs):
    """Private and public declare the same store with the same inputs: a switch either way is no diff,
    so neither deletes nor replaces it."""
    private, public = _store(runs["private"]), _store(runs["public"])
    assert set(private) == set(public) == STORE
    for key in STORE:
        assert private[key].inputs == public[key].inputs, key
        assert private[key].options["parent"] == public[key].options["parent"], key
