"""Settings: Pulumi.yaml declares every key once; bad values stop the program before any resource."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pulumi
import pytest
import yaml
from pulumi_mocks import PROJECT, REPO_ROOT, STACK, RecordingMocks, config_values, run_program

from settings import Settings, SettingsError, config_key, declared_config, load_settings

# (config, the key the error must name). Each would break a deployment or a derived Azure name.
# An operator's object id (a person or a CI service principal).
OPERATOR = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"

BAD_CONFIGURATIONS: list[tuple[dict[str, Any], str]] = [
    ({"systemNodeCount": 0}, "systemNodeCount"),
    ({"systemNodeCount": "three"}, "systemNodeCount"),
    ({"systemNodeAutoscale": True, "systemNodeMinCount": 4, "systemNodeMaxCount": 2}, "systemNodeMinCount"),
    ({"systemNodeMinCount": 0}, "systemNodeMinCount"),
    ({"systemNodeAutoscale": "sometimes"}, "systemNodeAutoscale"),
    ({"systemNodeVmSize": "D4s_v5"}, "systemNodeVmSize"),
    ({"jobsNodeVmSize": "Standard D4s"}, "jobsNodeVmSize"),
    ({"jobsNodeMaxCount": 0}, "jobsNodeMaxCount"),
    ({"kubernetesVersion": "1"}, "kubernetesVersion"),
    ({"kubernetesVersion": "v1.33"}, "kubernetesVersion"),
    ({"kubernetesVersion": "1.33.2.1"}, "kubernetesVersion"),
    ({"namespace": "MLflow"}, "namespace"),
    ({"namespace": "-mlflow"}, "namespace"),
    ({"namespace": "a" * 64}, "namespace"),
    ({"trackingServiceAccount": "Tracking_Server"}, "trackingServiceAccount"),
    # The backup Jobs' ServiceAccount: the server would be federated with the identity that writes backups.
    ({"trackingServiceAccount": "mlflow-backup"}, "trackingServiceAccount"),
    ({"fileShareQuotaGib": 0}, "fileShareQuotaGib"),
    ({"fileShareQuotaGib": 102401}, "fileShareQuotaGib"),
    ({"logRetentionDays": 29}, "logRetentionDays"),
    ({"logRetentionDays": 731}, "logRetentionDays"),
    ({"namePrefix": "ml"}, "namePrefix"),
    ({"namePrefix": "mlflowplatform"}, "namePrefix"),
    ({"namePrefix": "ML-flow"}, "namePrefix"),
    ({"namePrefix": "1mlflow"}, "namePrefix"),
    ({"acrSku": "Gold"}, "acrSku"),
    ({"storageSku": "Premium_LRS"}, "storageSku"),
    ({"mysqlDiskSku": "PremiumV2_LRS"}, "mysqlDiskSku"),
    ({"mysqlDiskSku": "UltraSSD_LRS"}, "mysqlDiskSku"),
    ({"mysqlDiskSku": "standardssd_lrs"}, "mysqlDiskSku"),
    ({"mysqlDiskSizeGib": 7}, "mysqlDiskSizeGib"),
    ({"mysqlDiskSizeGib": 32768}, "mysqlDiskSizeGib"),
    ({"mysqlDiskSizeGib": "64GiB"}, "mysqlDiskSizeGib"),
    ({"dataRetention": "keep"}, "dataRetention"),
    ({"location": "West Europe"}, "location"),
    # At most a year (and at least a day); a key the program no longer reads is named, not ignored.
    ({"deployerPasswordLifetimeDays": 0}, "deployerPasswordLifetimeDays"),
    ({"deployerPasswordLifetimeDays": 366}, "deployerPasswordLifetimeDays"),
    ({"deployerPasswordLifetimeDays": "a year"}, "deployerPasswordLifetimeDays"),
    ({"deployerPasswordEndDate": "2027-11-30T00:00:00Z"}, "deployerPasswordEndDate"),
    ({"exportDeployerPassword": "yes"}, "exportDeployerPassword"),
    ({"apiServerAuthorizedIpRanges": "203.0.113.0/24"}, "apiServerAuthorizedIpRanges"),
    # Kept data is found by the prefix its account name starts with: another prefix's account, or no
    # storage account name at all, cannot be adopted. (A namePrefix equal to its default is indistinguishable
    # from an unset one, which the Pulumi CLI also passes as the default: then the account's prefix wins.)
    ({"namePrefix": "team", "dataStorageAccount": "otherdata0a1b2c3d"}, "dataStorageAccount"),
    ({"dataStorageAccount": "mlflowdata_0a1b"}, "dataStorageAccount"),
    ({"dataStorageAccount": "mlflowdata" + "x" * 20}, "dataStorageAccount"),
    ({"allowDataReplacement": "yes"}, "allowDataReplacement"),
    ({"backupSchedule": "daily"}, "backupSchedule"),
    ({"backupSchedule": "0 2 * *"}, "backupSchedule"),
    ({"binlogShipMinutes": 0}, "binlogShipMinutes"),
    ({"binlogShipMinutes": 61}, "binlogShipMinutes"),
    ({"backupRetentionDays": 0}, "backupRetentionDays"),
    # Azure's range for blob and container soft delete is 1-365 days.
    ({"softDeleteRetentionDays": 0}, "softDeleteRetentionDays"),
    ({"softDeleteRetentionDays": 366}, "softDeleteRetentionDays"),
    ({"softDeleteRetentionDays": -7}, "softDeleteRetentionDays"),
    ({"softDeleteRetentionDays": "two weeks"}, "softDeleteRetentionDays"),
    ({"softDeleteRetentionDays": True}, "softDeleteRetentionDays"),
    ({"gcSchedule": "@daily now"}, "gcSchedule"),
    ({"gcOlderThan": "30 days"}, "gcOlderThan"),
    ({"gcOlderThan": "2h1d"}, "gcOlderThan"),
    ({"gcOlderThan": ""}, "gcOlderThan"),
    ({"runsNamespace": "mlflow"}, "runsNamespace"),
    ({"runsNamespace": "Runs_NS"}, "runsNamespace"),
    # The certificate's CA is reached over HTTPS only, and must be a URL at all.
    ({"acmeDirectory": "http://acme-v02.api.letsencrypt.org/directory"}, "acmeDirectory"),
    ({"acmeDirectory": "letsencrypt"}, "acmeDirectory"),
    ({"acmeDirectory": ""}, "acmeDirectory"),
    # `database`: one of the two modes; the flexible server's settings follow Azure's rules.
    ({"database": "managed"}, "database"),
    ({"database": "FlexibleServer"}, "database"),
    ({"database": "flexibleServer", "databaseSku": "B1ms"}, "databaseSku"),
    ({"database": "flexibleServer", "databaseSku": "Standard_F2s_v2"}, "databaseSku"),
    ({"database": "flexibleServer", "databaseHighAvailability": "Enabled"}, "databaseHighAvailability"),
    # High availability is not offered on the Burstable tier (the default SKU).
    ({"database": "flexibleServer", "databaseHighAvailability": "ZoneRedundant"}, "databaseHighAvailability"),
    (
        {"database": "flexibleServer", "databaseSku": "Standard_B2s", "databaseHighAvailability": "SameZone"},
        "databaseHighAvailability",
    ),
    ({"database": "flexibleServer", "databaseBackupRetentionDays": 0}, "databaseBackupRetentionDays"),
    ({"database": "flexibleServer", "databaseBackupRetentionDays": 36}, "databaseBackupRetentionDays"),
    ({"database": "flexibleServer", "databaseGeoRedundantBackup": "yes"}, "databaseGeoRedundantBackup"),
    ({"database": "flexibleServer", "databaseServerName": "Restored_Server"}, "databaseServerName"),
    ({"database": "flexibleServer", "databaseServerName": "-restored"}, "databaseServerName"),
    # A key of the other mode would be silently ignored: it is named instead.
    ({"databaseSku": "Standard_D2ds_v4"}, "databaseSku"),
    ({"databaseBackupRetentionDays": 14}, "databaseBackupRetentionDays"),
    ({"databaseServerName": "mlflow-mysql-restored"}, "databaseServerName"),
    ({"database": "flexibleServer", "mysqlDiskSizeGib": 128}, "mysqlDiskSizeGib"),
    ({"database": "flexibleServer", "backupSchedule": "0 */6 * * *"}, "backupSchedule"),
    ({"database": "flexibleServer", "binlogShipMinutes": 10}, "binlogShipMinutes"),
    # Operators are object ids, each once (a UPN or a client id would never match the caller).
    ({"operators": ["alice@example.com"]}, "operators[0]"),
    ({"operators": [OPERATOR, OPERATOR.upper()]}, "operators[1]"),
    ({"operators": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"}, "operators"),
    ({"operatorsGroup": "mlflow-operators"}, "operatorsGroup"),
]


@pytest.mark.parametrize(
    ("config", "key"), BAD_CONFIGURATIONS, ids=[f"{k}={v}" for v, k in BAD_CONFIGURATIONS]
)
def test_bad_configuration_is_rejected_naming_its_key_before_any_resource(config, key):
    mocks = RecordingMocks()
    with pytest.raises(SettingsError) as raised:
        run_program(config, mocks=mocks)
    assert [p.key for p in raised.value.problems] == [key]
    message = str(raised.value)
    assert key in message
    assert repr(raised.value.problems[0].value) in message
    assert mocks.resources == []
    assert mocks.calls == []


def test_enum_errors_list_the_allowed_values():
    with pytest.raises(SettingsError) as raised:
        run_program({"acrSku": "Gold", "dataRetention": "keep"})
    message = str(raised.value)
    assert "Basic, Standard, Premium" in message
    assert "retain, delete" in message


def test_every_bad_key_is_reported_at_once():
    config = {"namespace": "Bad_NS", "logRetentionDays": 5, "acrSku": "Gold", "systemNodeCount": "x"}
    with pytest.raises(SettingsError) as raised:
        run_program(config)
    assert sorted(p.key for p in raised.value.problems) == sorted(config)


def test_pulumi_yaml_declares_type_description_and_default_for_every_key():
    declared = declared_config()
    for key, declaration in declared.items():
        assert declaration.get("type") in ("string", "integer", "boolean", "array"), key
        if declaration["type"] == "array":
            assert declaration.get("items", {}).get("type"), f"{key}: arrays declare their item type"
        assert declaration.get("description"), key
        assert "default" in declaration, key


def test_settings_fields_and_declared_keys_are_the_same_set():
    fields = {config_key(f.name) for f in dataclasses.fields(Settings)}
    assert fields == set(declared_config())


ENTRA_GROUP = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def settings_from(config: dict[str, Any]) -> Settings:
    """Settings as the program would read them from this stack config (no program run)."""
    pulumi.runtime.set_all_config(config_values(config), secret_keys=[])
    pulumi.runtime.set_mocks(RecordingMocks(), project=PROJECT, stack=STACK)
    return load_settings()


def test_declared_defaults_are_valid_and_become_the_settings():
    settings = settings_from({})
    declared = declared_config()
    for field in dataclasses.fields(Settings):
        default = declared[config_key(field.name)]["default"]
        if field.name in (
            "kubernetes_version",
            "data_storage_account",
            "database_server_name",
            "deployer_ip_address",
            "operators_group",
        ):  # empty: not set
            default = default or None
        value = getattr(settings, field.name)
        assert (list(value) if isinstance(value, tuple) else value) == default, field.name
    assert run_program({}).resources, "the defaults must deploy"


def _with_every_default(config: dict[str, Any]) -> dict[str, Any]:
    """Stack config as the Pulumi CLI hands it to the program: each Pulumi.yaml default the stack does not
    set is passed as if the stack had set it (ValidateStackConfigAndApplyProjectConfig)."""
    defaults = {key: d["default"] for key, d in declared_config().items() if d["default"] not in ("", None)}
    return {**defaults, **config}


def test_the_cli_passing_every_default_changes_nothing():
    """Keys only read in another mode (entra-only keys under basic) are refused when set to something, not
    when the CLI passes their default; and a kept account's prefix still replaces the default namePrefix."""
    assert settings_from(_with_every_default({})) == settings_from({})
    kept = {"dataStorageAccount": "teamdatad4f2a1b9"}
    assert settings_from(_with_every_default(kept)).name_prefix == settings_from(kept).name_prefix == "team"
    with pytest.raises(SettingsError) as raised:
        settings_from(_with_every_default({"signInSecretLifetimeDays": 90}))
    assert [p.key for p in raised.value.problems] == ["signInSecretLifetimeDays"]


@pytest.mark.parametrize(
    ("config", "field", "expected"),
    [
        ({"systemNodeCount": "5"}, "system_node_count", 5),
        ({"systemNodeAutoscale": "true"}, "system_node_autoscale", True),
        ({"jobsNodePool": "false"}, "jobs_node_pool", False),
        ({"kubernetesVersion": "1.33"}, "kubernetes_version", "1.33"),
        ({"kubernetesVersion": "1.33.4"}, "kubernetes_version", "1.33.4"),
        ({"kubernetesVersion": ""}, "kubernetes_version", None),
        ({"namePrefix": "abc"}, "name_prefix", "abc"),
        ({"mysqlDiskSizeGib": "64"}, "mysql_disk_size_gib", 64),
        ({"softDeleteRetentionDays": "1"}, "soft_delete_retention_days", 1),
        ({"softDeleteRetentionDays": 365}, "soft_delete_retention_days", 365),
        ({"dataStorageAccount": "mlflowdatak3p9x2ab"}, "data_storage_account", "mlflowdatak3p9x2ab"),
        (
            {"namePrefix": "team7", "dataStorageAccount": "team7data0a1b2c3d"},
            "data_storage_account",
            "team7data0a1b2c3d",
        ),
        ({"allowDataReplacement": "true"}, "allow_data_replacement", True),
        # Only the kept account given: its prefix is the stack's.
        ({"dataStorageAccount": "mlteamdata0a1b2c3d"}, "name_prefix", "mlteam"),
        ({"mysqlDiskSku": "Premium_ZRS"}, "mysql_disk_sku", "Premium_ZRS"),
        ({"deployerPasswordLifetimeDays": "365"}, "deployer_password_lifetime_days", 365),
        ({"exportDeployerPassword": "true"}, "export_deployer_password", True),
        ({"apiServerAuthorizedIpRanges": []}, "api_server_authorized_ip_ranges", ()),
        ({"namePrefix": "abcdefghijk"}, "name_prefix", "abcdefghijk"),
        ({"defaultPermission": "NO_PERMISSIONS"}, "default_permission", "NO_PERMISSIONS"),
        ({"database": "flexibleServer"}, "database_tier", "Burstable"),
        (
            {
                "database": "flexibleServer",
                "databaseSku": "Standard_D2ds_v4",
                "databaseHighAvailability": "ZoneRedundant",
            },
            "database_tier",
            "GeneralPurpose",
        ),
        (
            {"database": "flexibleServer", "databaseSku": "Standard_E4ds_v5"},
            "database_tier",
            "MemoryOptimized",
        ),
        (
            {"database": "flexibleServer", "databaseBackupRetentionDays": "35"},
            "database_backup_retention_days",
            35,
        ),
        (
            {"database": "flexibleServer", "databaseGeoRedundantBackup": "true"},
            "database_geo_redundant_backup",
            True,
        ),
        (
            {"database": "flexibleServer", "databaseServerName": "mlflow-mysql-r1"},
            "database_server_name",
            "mlflow-mysql-r1",
        ),
        ({"database": "flexibleServer"}, "database_server_name", None),
        ({"database": "flexibleServer"}, "flexible_server", True),
        ({}, "flexible_server", False),
        # Sign-in with Entra ID: group object ids in lower case (as tokens carry them), once each.
        (
            {
                "auth": "entra",
                "entraAllowedGroups": [ENTRA_GROUP.upper(), ENTRA_GROUP],
                "entraAdminGroups": [ENTRA_GROUP],
                "signInSecretLifetimeDays": "365",
            },
            "entra_allowed_groups",
            (ENTRA_GROUP,),
        ),
        (
            {"auth": "entra", "entraAllowedGroups": [ENTRA_GROUP], "entraAdminGroups": [ENTRA_GROUP]},
            "sign_in_secret_lifetime_days",
            180,
        ),
        ({"operators": [OPERATOR.upper(), ENTRA_GROUP]}, "operators", (OPERATOR, ENTRA_GROUP)),
        ({"operatorsGroup": ENTRA_GROUP.upper()}, "operators_group", ENTRA_GROUP),
        (
            {"systemNodeAutoscale": False, "systemNodeMinCount": 5, "systemNodeMaxCount": 2},
            "system_node_min_count",
            5,
        ),
    ],
)
def test_good_values_are_parsed_to_their_type(config, field, expected):
    assert getattr(settings_from(config), field) == expected


def _config_reference_table() -> dict[str, dict[str, str]]:
    """Rows of the table in docs/configuration.md, the configuration reference: key -> {type, default}."""
    reference = (REPO_ROOT / "docs" / "configuration.md").read_text()
    assert reference.startswith("# Configuration reference\n"), "docs/configuration.md lost its heading"
    rows = {}
    for line in reference.splitlines():
        match = re.fullmatch(r"\|\s*`([A-Za-z]+)`\s*\|\s*(\w+)\s*\|\s*(.*?)\s*\|\s*(.+?)\s*\|", line.strip())
        if match:
            key, type_, default, _description = match.groups()
            rows[key] = {"type": type_, "default": default}
    return rows


def _as_reference_default(value: Any) -> str:
    if value == "" or value is None:
        return "(empty)"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return f"`{value}`" if value else "`[]`"
    return f"`{value}`"


def test_config_reference_matches_pulumi_yaml():
    table = _config_reference_table()
    declared = declared_config()
    assert set(table) == set(declared), "docs/configuration.md table keys differ from Pulumi.yaml"
    for key, declaration in declared.items():
        assert table[key]["type"] == declaration["type"], key
        assert table[key]["default"] == _as_reference_default(declaration["default"]), key


def test_example_stack_is_valid():
    """Pulumi.dev.yaml, the example stack, passes validation as written."""
    stack = yaml.safe_load((REPO_ROOT / "Pulumi.dev.yaml").read_text())["config"]
    config = {key.split(":", 1)[1]: value for key, value in stack.items() if key.startswith(f"{PROJECT}:")}
    assert config, "the example stack sets project keys"
    settings = settings_from(config)
    assert settings.name_prefix == config["namePrefix"]
    run = run_program(config)
    releases = {r.inputs["name"] for r in run.of_type("kubernetes:helm.sh/v3:Release")}
    assert releases == {"mlflow", *(spec.name for spec in settings.runs)}


TRAIN_RUN = {"name": "train-demo", "entryPoint": "train", "experiment": "demo", "parameters": {}}
EVALUATE_RUN = {"name": "evaluate-demo", "entryPoint": "evaluate", "parameters": {"experiment_name": "demo"}}


def test_evaluate_experiment_defaults_to_its_eval_experiment_and_may_be_given():
    settings = settings_from(
        {"runs": [TRAIN_RUN, EVALUATE_RUN, dict(EVALUATE_RUN, name="again", experiment="demo_eval")]}
    )
    assert [run.experiment for run in settings.runs] == ["demo", "demo_eval", "demo_eval"]
    assert [run.after for run in settings.runs] == [(), (), ()]


@pytest.mark.parametrize("experiment", ["demo", "", "other_eval", 7])
def test_evaluate_in_another_experiment_is_refused_naming_the_run(experiment):
    with pytest.raises(SettingsError) as raised:
        settings_from({"runs": [dict(EVALUATE_RUN, experiment=experiment)]})
    (problem,) = raised.value.problems
    assert problem.key == "runs[0].experiment"
    assert "'evaluate-demo'" in problem.rule and "'demo_eval'" in problem.rule
    assert problem.value == experiment


# (runs, the key and what its rule must say): `after` names only runs listed earlier, never the run itself.
BAD_AFTER: dict[str, tuple[list[dict[str, Any]], str, str]] = {
    "unknown-name": ([TRAIN_RUN, dict(EVALUATE_RUN, after=["train-old"])], "runs[1].after[0]", "no run has"),
    "later-run": ([dict(EVALUATE_RUN, after=["train-demo"]), TRAIN_RUN], "runs[0].after[0]", "comes later"),
    "itself": ([TRAIN_RUN, dict(EVALUATE_RUN, after=["evaluate-demo"])], "runs[1].after[0]", "itself"),
    "not-a-list": ([TRAIN_RUN, dict(EVALUATE_RUN, after="train-demo")], "runs[1].after", "must be a list"),
}


@pytest.mark.parametrize("case", list(BAD_AFTER))
def test_after_names_only_earlier_runs(case):
    runs, key, says = BAD_AFTER[case]
    with pytest.raises(SettingsError) as raised:
        settings_from({"runs": runs})
    (problem,) = raised.value.problems
    assert problem.key == key
    assert says in problem.rule
    assert key in str(raised.value)


def test_after_is_kept_in_order_without_repeats():
    runs = [
        TRAIN_RUN,
        dict(TRAIN_RUN, name="train-big"),
        dict(EVALUATE_RUN, after=["train-big", "train-demo", "train-big"]),
    ]
    assert settings_from({"runs": runs}).runs[2].after == ("train-big", "train-demo")


@pytest.mark.parametrize(
    ("ranges", "keys"),
    [
        (["10.0.0.0/7"], ["allowedSourceRanges[0]"]),
        (["203.0.113.0/24", "2001:db8::/16"], ["allowedSourceRanges[1]"]),
        # Each half is refused for its width, and together they are the whole internet.
        (
            ["0.0.0.0/1", "128.0.0.0/1"],
            ["allowedSourceRanges[0]", "allowedSourceRanges[1]", "allowedSourceRanges"],
        ),
        # 256 ranges of the widest allowed size still cannot add up to everything.
        ([f"{first}.0.0.0/8" for first in range(256)], ["allowedSourceRanges"]),
    ],
    ids=["wider-than-/8", "ipv6-wider-than-/32", "two-halves", "every-/8"],
)
def test_source_ranges_that_mean_the_internet_are_refused(ranges, keys):
    with pytest.raises(SettingsError) as raised:
        settings_from({"exposure": "public", "allowedSourceRanges": ranges})
    assert [p.key for p in raised.value.problems] == keys


@pytest.mark.parametrize(
    ("cidrs", "keys"),
    [
        (["10.0.0.0/7"], ["llmProviderCidrs[0]"]),
        (["10.30.4.0/28", "not-a-range"], ["llmProviderCidrs[1]"]),
        (["0.0.0.0/0"], ["llmProviderCidrs[0]"]),
    ],
)
def test_provider_ranges_that_are_not_a_providers_addresses_are_refused(cidrs, keys):
    with pytest.raises(SettingsError) as raised:
        settings_from({"llmProviderCidrs": cidrs})
    assert [p.key for p in raised.value.problems] == keys


def test_provider_ranges_are_kept_in_canonical_form():
    settings = settings_from({"llmProviderCidrs": ["10.30.4.1/28", "20.50.60.70"], "serverJobs": False})
    assert settings.llm_provider_cidrs == ("10.30.4.0/28", "20.50.60.70/32")
    assert settings.server_jobs is False


def test_narrow_source_ranges_are_accepted():
    ranges = ["10.0.0.0/8", "203.0.113.7/32", "2001:db8::/32", *[f"{n}.0.0.0/8" for n in range(11, 120)]]
    assert settings_from(
        {"exposure": "public", "allowedSourceRanges": ranges}
    ).allowed_source_ranges == tuple(ranges)


# apiServerAuthorizedIpRanges: (ranges, the keys the problems name, what the first rule says).
BAD_API_SERVER_RANGES: dict[str, tuple[list[Any], list[str], str]] = {
    "not-a-cidr": (["203.0.113.0/24", "office"], ["apiServerAuthorizedIpRanges[1]"], "IPv4 CIDR"),
    "host-bits-set": (
        ["203.0.113.7/24"],
        ["apiServerAuthorizedIpRanges[0]"],
        "starting at its first address",
    ),
    "ipv6": (["2001:db8::/48"], ["apiServerAuthorizedIpRanges[0]"], "IPv4 ranges only"),
    "the-internet": (["0.0.0.0/0"], ["apiServerAuthorizedIpRanges[0]"], "wider than /8"),
    "wider-than-/8": (["10.0.0.0/7"], ["apiServerAuthorizedIpRanges[0]"], "wider than /8"),
    "unspecified": (["0.0.0.0/32"], ["apiServerAuthorizedIpRanges[0]"], "no client has"),
    "more-than-200": (
        [f"198.51.{n // 256}.{n % 256}/32" for n in range(201)],
        ["apiServerAuthorizedIpRanges"],
        "at most 200",
    ),
}


@pytest.mark.parametrize("case", list(BAD_API_SERVER_RANGES))
def test_api_server_ranges_that_azure_refuses_or_mean_the_internet_are_refused(case):
    ranges, keys, says = BAD_API_SERVER_RANGES[case]
    with pytest.raises(SettingsError) as raised:
        settings_from({"apiServerAuthorizedIpRanges": ranges})
    assert [p.key for p in raised.value.problems] == keys
    assert says in raised.value.problems[0].rule
    assert keys[0] in str(raised.value)


@pytest.mark.parametrize(
    ("ranges", "expected"),
    [
        ([], ()),  # no IP restriction: Entra ID sign-in with an Azure role is still required
        (["203.0.113.0/24"], ("203.0.113.0/24",)),
        (["203.0.113.7"], ("203.0.113.7/32",)),  # one address: /32, as AKS stores it
        (["10.0.0.0/8", "198.51.100.0/28"], ("10.0.0.0/8", "198.51.100.0/28")),
        ([f"198.51.100.{n}/32" for n in range(200)], tuple(f"198.51.100.{n}/32" for n in range(200))),
    ],
    ids=["empty", "one-range", "one-address", "two-ranges", "200-ranges"],
)
def test_api_server_ranges_are_accepted_in_canonical_form(ranges, expected):
    assert settings_from({"apiServerAuthorizedIpRanges": ranges}).api_server_authorized_ip_ranges == expected


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.5",
        "100.64.0.1",
        "127.0.0.1",
        "169.254.1.1",
        "2001:db8::1",
        "office",
    ],
)
def test_a_deployer_address_the_api_server_never_sees_is_refused(address):
    with pytest.raises(SettingsError) as raised:
        settings_from({"apiServerAuthorizedIpRanges": ["203.0.113.0/24"], "deployerIpAddress": address})
    (problem,) = raised.value.problems
    assert problem.key == "deployerIpAddress" and problem.value == address
    assert "public IPv4 address" in problem.rule


def test_a_deployer_address_is_read_only_with_api_server_ranges():
    with pytest.raises(SettingsError) as raised:
        settings_from({"deployerIpAddress": "198.51.100.7"})
    (problem,) = raised.value.problems
    assert problem.key == "deployerIpAddress" and "apiServerAuthorizedIpRanges" in problem.rule
    config = {"apiServerAuthorizedIpRanges": ["198.51.100.0/24"], "deployerIpAddress": "198.51.100.7"}
    assert settings_from(config).deployer_ip_address == "198.51.100.7"


def test_the_retired_password_end_date_says_what_replaced_it():
    with pytest.raises(SettingsError) as raised:
        settings_from({"deployerPasswordEndDate": "2027-11-30T00:00:00Z"})
    (problem,) = raised.value.problems
    assert "deployerPasswordLifetimeDays" in problem.rule and "pulumi config rm" in problem.rule
