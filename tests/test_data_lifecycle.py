"""The team's data across teardowns and config changes, under Pulumi mocks.

- While `dataRetention: retain`, the data resources are protected (the engine refuses to delete or replace
  them) as well as retained on destroy, and the data group has a CanNotDelete lock. `pulumi destroy
  --exclude-protected` keeps exactly the data and its lock, and sends Azure no delete the lock refuses.
- `dataStorageAccount` adopts the data an earlier stack kept: the same resources, declared with the same
  inputs and the `import` option set to the ids Azure gave them, so nothing is created or replaced.
- The data guard is declared first, everything that changes Azure, Entra ID or the cluster waits for it,
  and its diff refuses a change of the data's identity unless `allowDataReplacement` is set.
"""

from __future__ import annotations

import re

import pytest
from pulumi_mocks import REPO_ROOT, SUBSCRIPTION_ID, ProgramRun, RecordingMocks, is_secret, plain, run_program

from components.data_guard import DataGuardProvider, DataReplacementRefused
from components.database_server import ADOPTION_ONLY, AZURE_MANAGED

# Logical names of the data resources (component children) an adopting stack imports by id.
DATA = (
    "groups-data",
    "storage-account",
    "storage-artifacts",
    "storage-backups",
    "storage-backups-retention",
    "storage-lifecycle",
    "mysql-disk-disk",
)
RETENTION = "storage-backups-retention"
LOCK = "groups-data-lock"
# Protected with the data, but never imported: the random suffix of the account name (an adopted account
# keeps its name), and the blob service properties (a singleton child: creating them is a PUT).
SUFFIX = "storage-suffix"
BLOB_SERVICE = "storage-blob-service"
PROTECTED = (*DATA, SUFFIX, BLOB_SERVICE)
IMPORTED = (*DATA, LOCK)
GUARD = "pulumi-python:dynamic/mlflow-aks:DataGuard"
OPERATORS = "pulumi-python:dynamic/mlflow-aks:Operators"


def by_name(run: ProgramRun) -> dict[str, object]:
    return {r.name: r for r in run.resources}


@pytest.mark.parametrize(
    ("config", "protected"),
    [
        ({}, True),
        ({"dataRetention": "delete"}, False),
        ({"allowDataReplacement": True}, False),
        ({"dataRetention": "delete", "allowDataReplacement": True}, False),
    ],
    ids=["retain", "delete", "retain-replacement-allowed", "delete-replacement-allowed"],
)
def test_data_resources_are_protected_while_retained(config, protected):
    run = run_program(config)
    resources = by_name(run)
    for name in PROTECTED:
        assert resources[name].options["protect"] is protected, name
    others = [r.name for r in run.resources if r.name not in PROTECTED and r.options["protect"]]
    assert others == [], "only the data is protected: everything else is removed by destroy"


@pytest.fixture(scope="module")
def created() -> ProgramRun:
    """A stack that created its data (the defaults: retain)."""
    return run_program({})


@pytest.fixture(scope="module")
def adopted(created) -> ProgramRun:
    """A new stack adopting what `created` kept, with the one value copied from its outputs."""
    return run_program({"dataStorageAccount": created.exports["storageAccount"]})


def test_one_value_adopts_data_kept_under_another_prefix():
    """Data a `mlteam` stack kept, adopted by a stack whose only setting is the old account's name."""
    kept = run_program({"namePrefix": "mlteam"})
    adopting = run_program({"dataStorageAccount": kept.exports["storageAccount"]})
    assert adopting.exports["dataResourceGroup"] == "mlteam-data"
    for name in IMPORTED:
        assert by_name(adopting)[name].options["importId"] == by_name(kept)[name].id
        assert plain(by_name(adopting)[name].inputs) == plain(by_name(kept)[name].inputs)


def test_adoption_needs_only_the_kept_storage_account_name(created, adopted):
    account = created.exports["storageAccount"]
    assert account.startswith("mlflowdata") and len(account) == len("mlflowdata") + 8
    assert adopted.exports["storageAccount"] == account
    assert adopted.exports["dataResourceGroup"] == created.exports["dataResourceGroup"]
    assert adopted.exports["mysqlDiskId"] == created.exports["mysqlDiskId"]


@pytest.mark.parametrize("name", IMPORTED)
def test_adopted_data_is_imported_by_id_with_the_inputs_it_has(created, adopted, name):
    """The same logical resource (type, name, parent: the same URN), the same inputs as the stack that
    created it (so the import's check finds no difference) and the id Azure gave it as the import id."""
    before, after = by_name(created)[name], by_name(adopted)[name]
    assert (after.type, after.options["parent"]) == (before.type, before.options["parent"])
    assert plain(after.inputs) == plain(before.inputs)
    assert before.options["importId"] == ""
    assert after.options["importId"] == before.id
    assert after.id.startswith(f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/mlflow-data")
    kept = name != LOCK  # the lock is neither protected nor retained: see test_foundation.py
    assert after.options["protect"] is kept and after.options["retainOnDelete"] is kept


def test_adoption_declares_no_new_name_and_imports_nothing_else(created, adopted):
    assert SUFFIX in by_name(created) and SUFFIX not in by_name(adopted)
    imported = {r.name for r in adopted.resources if r.options["importId"]}
    assert imported == set(IMPORTED)
    # The blob service properties are declared (and protected) all the same, with the same inputs.
    assert plain(by_name(adopted)[BLOB_SERVICE].inputs) == plain(by_name(created)[BLOB_SERVICE].inputs)
    assert by_name(adopted)[BLOB_SERVICE].options["protect"] is True
    # Everything else is declared exactly as in the stack that created the data.
    assert {(r.type, r.name) for r in adopted.resources} == {
        (r.type, r.name) for r in created.resources if r.name != SUFFIX
    }


def _transitive_dependencies(run: ProgramRun) -> dict[str, set[str]]:
    # A resource also waits for its provider (the Kubernetes provider waits for the cluster's kubeconfig);
    # a provider reference is `<provider urn>::<provider id>`.
    direct = {r.name: {urn.rsplit("::", 1)[1] for urn in r.options["dependencies"]} for r in run.resources}
    for r in run.resources:
        if r.provider:
            direct[r.name].add(r.provider.rsplit("::", 2)[1])
    closure: dict[str, set[str]] = {}

    def reach(name: str) -> set[str]:
        if name not in closure:
            closure[name] = set()
            for dependency in direct[name]:
                closure[name] |= {dependency, *reach(dependency)}
        return closure[name]

    for resource in run.resources:
        reach(resource.name)
    return closure


def _kept_by_exclude_protected(run: ProgramRun) -> set[str]:
    """What `pulumi destroy --exclude-protected` leaves alone: every protected resource and everything it
    depends on, transitively: dependencies, provider and parent (getProtectedExcludes in pulumi/pulumi
    pkg/cmd/pulumi/operations/destroy.go, over TransitiveDependenciesOf in pkg/resource/graph)."""
    by_urn_name = {r.name: r for r in run.resources}
    closure = _transitive_dependencies(run)
    kept: set[str] = set()
    for resource in run.resources:
        if resource.options["protect"]:
            kept |= {resource.name, *closure[resource.name]}
    # Parents (components) of what is kept are kept too, up to the stack (not a registered resource here).
    for name in list(kept):
        parent = by_urn_name[name].options["parent"]
        while parent and parent.rsplit("::", 1)[1] in by_urn_name:
            kept.add(parent.rsplit("::", 1)[1])
            parent = by_urn_name[parent.rsplit("::", 1)[1]].options["parent"]
    return kept


def _inside(run: ProgramRun, resource, group_id: str) -> bool:
    """Whether deleting `resource` is a DELETE on Azure at or under the resource group `group_id`."""
    if not resource.type.startswith("azure-native:"):
        return False
    where = resource.inputs.get("scope") if resource.type.endswith(":RoleAssignment") else resource.id
    return isinstance(where, str) and (where == group_id or where.startswith(f"{group_id}/"))


@pytest.mark.parametrize(
    "config", [{}, {"dataStorageAccount": "mlflowdata0a1b2c3d"}], ids=["create", "adopt"]
)
def test_destroy_exclude_protected_keeps_the_data_and_its_lock_and_nothing_else(config):
    run = run_program(config)
    kept = _kept_by_exclude_protected(run)
    azure_kept = {name for name in kept if by_name(run)[name].type.startswith("azure-native:")}
    assert azure_kept == set(IMPORTED) | {BLOB_SERVICE}
    # The platform goes: no dependency of the data drags the cluster or the platform group along.
    for gone in ("cluster-aks", "groups-platform", "projects-account", "registry-acr"):
        if gone in by_name(run):
            assert gone not in kept, gone


@pytest.mark.parametrize(
    "config",
    [{}, {"dataStorageAccount": "mlflowdata0a1b2c3d"}, {"allowDataReplacement": True}],
    ids=["create", "adopt", "retain-replacement-allowed"],
)
def test_destroy_sends_no_delete_the_lock_refuses(config):
    """Under the CanNotDelete lock, Azure refuses every delete at or under the data group, role assignments
    included (ScopeLocked). So everything `pulumi destroy` (with or without `--exclude-protected`) would
    delete there is retained on delete instead; the lock itself is deleted last, after what depends on it."""
    run = run_program(config)
    group_id = by_name(run)["groups-data"].id
    lock = by_name(run)[LOCK]
    inside = [r for r in run.resources if r.name != LOCK and _inside(run, r, group_id)]
    assert {r.type for r in inside} >= {
        "azure-native:authorization:RoleAssignment",
        "azure-native:storage:StorageAccount",
        "azure-native:compute:Disk",
    }
    for resource in inside:
        assert resource.options["retainOnDelete"] is True, resource.name
    # Deleted after everything that depends on it: the account (and through it the containers) waits for it.
    assert any(urn.endswith(f"::{LOCK}") for urn in by_name(run)["storage-account"].options["dependencies"])
    assert lock.options["retainOnDelete"] is False


def test_with_delete_there_is_no_lock_and_destroy_deletes_the_data():
    """`dataRetention: delete`: no lock, nothing retained, so `pulumi destroy` removes all of it (and the
    `pulumi up` that switches a retained stack to `delete` deletes the lock, which is not protected).
    The one exception is the backups' retention policy: azure-native cannot delete it
    (pulumi/pulumi-azure-native#2156), and it goes with the container, which Azure deletes once no backup
    in it is under retention (docs/backup-and-restore.md)."""
    run = run_program({"dataRetention": "delete"})
    assert LOCK not in by_name(run)
    assert [r.name for r in run.resources if r.options["protect"]] == []
    assert [r.name for r in run.resources if r.options["retainOnDelete"]] == [RETENTION]
    assert _kept_by_exclude_protected(run) == set()


def test_the_kept_retention_policy_is_read_to_know_whether_to_import_it(adopted):
    """Azure answers for the kept container whether it has a policy (0 days: none)."""
    [read] = [
        c for c in adopted.calls if c.token == "azure-native:storage:getBlobContainerImmutabilityPolicy"
    ]
    assert read.args == {
        "accountName": adopted.exports["storageAccount"],
        "containerName": "mlflow-backups",
        "immutabilityPolicyName": "default",
        "resourceGroupName": "mlflow-data",
    }


def test_a_container_kept_by_an_older_stack_gets_its_retention_policy_created():
    """Data kept before backups were immutable: the container has no policy (Azure reports 0 days), so the
    adopting stack imports the container as it is and creates the policy on it, at container level until
    the container is migrated to version level (docs/backup-and-restore.md)."""
    kept = run_program({})
    adopting = run_program(
        {"dataStorageAccount": kept.exports["storageAccount"]},
        mocks=RecordingMocks(kept_backups_retention_days=0),
    )
    container, policy = by_name(adopting)["storage-backups"], by_name(adopting)[RETENTION]
    assert container.options["importId"] == by_name(kept)["storage-backups"].id
    # Compared without immutableStorageWithVersioning, which Azure sets only at creation.
    assert container.options["ignoreChanges"] == ["immutableStorageWithVersioning"]
    assert policy.options["importId"] == ""
    assert plain(policy.inputs) == plain(by_name(kept)[RETENTION].inputs)
    assert {r.name for r in adopting.resources if r.options["importId"]} == set(IMPORTED) - {RETENTION}


def test_adopting_a_policy_of_other_days_fails_naming_the_key():
    """The import would fail on the difference anyway; this says what to set."""
    kept = run_program({})
    with pytest.raises(
        Exception, match=r"backupRetentionDays: must be 45 to adopt the kept backups container"
    ):
        run_program(
            {"dataStorageAccount": kept.exports["storageAccount"]},
            mocks=RecordingMocks(kept_backups_retention_days=45),
        )


@pytest.mark.parametrize(
    "config", [{}, {"dataStorageAccount": "mlflowdata0a1b2c3d"}], ids=["create", "adopt"]
)
def test_the_guard_comes_first_and_every_change_to_the_world_waits_for_it(config):
    """With every other resource depending on it, nothing reaches Azure, Entra ID or the cluster before
    the guard's step has passed, even under `pulumi up --skip-preview`. Random values only live in state."""
    _assert_the_guard_comes_first(run_program(config))


def _assert_the_guard_comes_first(run: ProgramRun) -> None:
    # Registrations reach the mock monitor from worker threads, so components (which wait for nothing)
    # may be recorded before the guard; what changes the world is recorded after it, as it depends on it.
    # The operators ledger (components/operators.py) precedes it: it changes nothing; the guard waits for it.
    operators = [r for r in run.resources if r.type == OPERATORS]
    changes = [
        r
        for r in run.resources
        if r.custom and not r.type.startswith(("random:", "pulumi:providers:")) and r.type != OPERATORS
    ]
    assert changes[0].type == GUARD
    closure = _transitive_dependencies(run)
    assert [r.name for r in operators] == ["operators"] and "operators" in closure[changes[0].name]
    guard = changes[0].name
    waiting = {r.name for r in changes[1:]}
    assert waiting, "the program declares resources"
    assert {name for name in waiting if guard not in closure[name]} == set()


def test_the_in_place_guard_follows_the_data_guard_and_everything_else_waits_for_both(created):
    closure = _transitive_dependencies(created)
    in_place = "in-place-guard"
    assert "data-guard" in closure[in_place]
    changes = [
        r.name
        for r in created.resources
        if r.custom
        and r.name != in_place
        and not r.type.startswith(("random:", "pulumi:providers:", GUARD, OPERATORS))
    ]
    assert changes and [name for name in changes if in_place not in closure[name]] == []


def test_the_guard_records_the_identity_the_data_lives_under(created):
    guard = created.one(GUARD)
    assert plain(guard.inputs)["identity"] == {
        "namePrefix": "mlflow",
        "location": "westeurope",
        "dataStorageAccount": "",
        "dataResourceGroup": "mlflow-data",
        "mysqlDisk": "mlflow-mysql",
    }
    assert plain(guard.inputs)["allow_replacement"] is False


IDENTITY = {
    "namePrefix": "mlflow",
    "location": "westeurope",
    "dataStorageAccount": "",
    "dataResourceGroup": "mlflow-data",
    "mysqlDisk": "mlflow-mysql",
}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            {"namePrefix": "mlteam", "dataResourceGroup": "mlteam-data", "mysqlDisk": "mlteam-mysql"},
            "namePrefix",
        ),
        ({"location": "northeurope"}, "location"),
        ({"dataStorageAccount": "mlflowdatazz99zz99"}, "dataStorageAccount"),
    ],
    ids=["namePrefix", "location", "dataStorageAccount"],
)
def test_the_guard_refuses_a_change_that_would_replace_the_data(change, named):
    provider = DataGuardProvider()
    olds = {"identity": IDENTITY, "allow_replacement": False}
    news = {"identity": {**IDENTITY, **change}, "allow_replacement": False}
    with pytest.raises(DataReplacementRefused) as refused:
        provider.diff("data-guard", olds, news)
    message = str(refused.value)
    assert f"{named}: {IDENTITY[named]!r} -> {change[named]!r}" in message
    assert "nothing was changed" in message and "allowDataReplacement" in message
    assert "'mlflow-data'" in message  # where the data is, as it is today
    # With the override the same change goes through, as an update of the guard.
    allowed = provider.diff("data-guard", olds, {**news, "allow_replacement": True})
    assert allowed.changes is True and allowed.replaces == []


def test_the_guard_lets_everything_else_through():
    provider = DataGuardProvider()
    olds = {"identity": IDENTITY, "allow_replacement": False}
    assert provider.diff("data-guard", olds, dict(olds)).changes is False
    # Turning the override on or off alone changes no data.
    assert provider.diff("data-guard", olds, {**olds, "allow_replacement": True}).changes is True
    created = provider.create({"identity": IDENTITY, "allow_replacement": False})
    assert created.outs["identity"] == IDENTITY


# --- `database: flexibleServer`: the server, its databases and its network are the data ------------------

FLEXIBLE = {"database": "flexibleServer"}
# What a flexible-server stack keeps and imports instead of the MySQL disk: the server with its databases
# and its TLS setting, and the network it cannot live without.
FLEXIBLE_DATA = (
    "groups-data",
    "storage-account",
    "storage-artifacts",
    "storage-backups",
    "storage-backups-retention",
    "storage-lifecycle",
    "private-network-vnet",
    "private-network-dns-zone",
    "private-network-dns-link",
    "mysql-server-server",
    "mysql-server-require-secure-transport",
    "mysql-server-mlflow",
    "mysql-server-mlflow-auth",
    "mysql-server-mlflow-oidc",
)
FLEXIBLE_IMPORTED = (*FLEXIBLE_DATA, LOCK)
FLEXIBLE_PROTECTED = (*FLEXIBLE_DATA, SUFFIX, BLOB_SERVICE)
PASSWORD_RESET = "pulumi-python:dynamic/mlflow-aks:ServerAdminPassword"


@pytest.mark.parametrize(
    ("config", "protected"),
    [
        (FLEXIBLE, True),
        ({**FLEXIBLE, "dataRetention": "delete"}, False),
        ({**FLEXIBLE, "allowDataReplacement": True}, False),
    ],
    ids=["retain", "delete", "retain-replacement-allowed"],
)
def test_the_flexible_server_and_its_network_are_protected_like_the_disk(config, protected):
    run = run_program(config)
    resources = by_name(run)
    assert "mysql-disk-disk" not in resources
    for name in FLEXIBLE_PROTECTED:
        assert resources[name].options["protect"] is protected, name
        # The retention policy is always left to its container (Pulumi cannot delete it: storage.py).
        if name not in (SUFFIX, RETENTION):
            assert resources[name].options["retainOnDelete"] is (config.get("dataRetention") != "delete"), (
                name
            )
    others = [r.name for r in run.resources if r.name not in FLEXIBLE_PROTECTED and r.options["protect"]]
    assert others == []


@pytest.mark.parametrize("adopt", [False, True], ids=["create", "adopt"])
def test_destroy_exclude_protected_keeps_the_server_its_network_and_nothing_of_the_platform(adopt):
    run = run_program({**FLEXIBLE, **({"dataStorageAccount": "mlflowdata0a1b2c3d"} if adopt else {})})
    kept = _kept_by_exclude_protected(run)
    azure_kept = {name for name in kept if by_name(run)[name].type.startswith("azure-native:")}
    assert azure_kept == set(FLEXIBLE_IMPORTED) | {BLOB_SERVICE}
    for gone in ("cluster-aks", "cluster-jobs-pool", "groups-platform", "registry-acr"):
        assert gone not in kept, gone


def test_with_a_flexible_server_destroy_sends_no_delete_the_lock_refuses():
    run = run_program(FLEXIBLE)
    group_id = by_name(run)["groups-data"].id
    inside = [r for r in run.resources if r.name != LOCK and _inside(run, r, group_id)]
    assert {r.type for r in inside} >= {
        "azure-native:dbformysql:Server",
        "azure-native:network:VirtualNetwork",
        "azure-native:authorization:RoleAssignment",  # the cluster's role on its subnet
    }
    for resource in inside:
        assert resource.options["retainOnDelete"] is True, resource.name


@pytest.fixture(scope="module")
def flexible_created() -> ProgramRun:
    return run_program(FLEXIBLE)


@pytest.fixture(scope="module")
def flexible_adopted(flexible_created) -> ProgramRun:
    return run_program({**FLEXIBLE, "dataStorageAccount": flexible_created.exports["storageAccount"]})


@pytest.mark.parametrize("name", FLEXIBLE_IMPORTED)
def test_an_adopting_stack_imports_the_kept_server_and_network_by_id(
    flexible_created, flexible_adopted, name
):
    before, after = by_name(flexible_created)[name], by_name(flexible_adopted)[name]
    assert (after.type, after.options["parent"]) == (before.type, before.options["parent"])
    assert after.options["importId"] == before.id
    expected = plain(before.inputs)
    if name == "mysql-server-server":
        # Azure never returns the password, so the import leaves it out (and ignores it), and the
        # adopting stack sets its own afterwards.
        expected.pop("administratorLoginPassword")
        assert after.options["ignoreChanges"] == [*AZURE_MANAGED, *ADOPTION_ONLY]
        assert before.options["ignoreChanges"] == AZURE_MANAGED
    assert plain(after.inputs) == expected


def test_an_adopted_server_takes_the_adopting_stacks_password(flexible_created, flexible_adopted):
    assert flexible_created.of_type(PASSWORD_RESET) == []
    [reset] = flexible_adopted.of_type(PASSWORD_RESET)
    server = by_name(flexible_adopted)["mysql-server-server"]
    [password] = [r for r in flexible_adopted.resources if r.name == "mysql-server-admin-password"]
    assert (
        plain(reset.inputs)["server_id"] == server.id == by_name(flexible_created)["mysql-server-server"].id
    )
    assert (
        is_secret(reset.inputs["password"]) and plain(reset.inputs)["password"] == password.outputs["result"]
    )
    values = plain(flexible_adopted.named("mlflow-setup").inputs["values"])
    assert values["externalDatabase"]["password"] == password.outputs["result"]
    # The release waits until the password is in force.
    assert any(
        urn.endswith(f"::{reset.name}")
        for urn in flexible_adopted.named("mlflow-setup").options["dependencies"]
    )


def test_a_restored_server_is_adopted_by_its_name(flexible_created):
    """`databaseServerName`: the stack imports the named server (and its databases and TLS setting) from its
    data group under the same resources, and sets the stack's password on it."""
    restored = "mlflow-mysql-restored-0102"
    run = run_program({**FLEXIBLE, "databaseServerName": restored})
    group = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/mlflow-data"
    server_id = f"{group}/providers/Microsoft.DBforMySQL/flexibleServers/{restored}"
    server = by_name(run)["mysql-server-server"]
    assert plain(server.inputs)["serverName"] == restored and server.options["importId"] == server_id
    assert (
        by_name(run)["mysql-server-mlflow-auth"].options["importId"] == f"{server_id}/databases/mlflow_auth"
    )
    assert (
        by_name(run)["mysql-server-require-secure-transport"].options["importId"]
        == f"{server_id}/configurations/require_secure_transport"
    )
    [reset] = run.of_type(PASSWORD_RESET)
    assert plain(reset.inputs)["server_id"] == server_id
    # The network stays the stack's own: not imported, the same as before.
    assert by_name(run)["private-network-vnet"].options["importId"] == ""
    assert plain(by_name(run)["private-network-vnet"].inputs) == plain(
        by_name(flexible_created)["private-network-vnet"].inputs
    )
    assert plain(run.one(GUARD).inputs)["identity"]["databaseServerName"] == restored
    assert run.exports["databaseServer"] == restored


def test_with_a_flexible_server_there_is_no_disk_sku_to_guard(flexible_created):
    guard = plain(flexible_created.one("pulumi-python:dynamic/mlflow-aks:InPlaceGuard").inputs)
    assert set(guard["values"]) == {"systemNodeVmSize"}


def test_the_guard_records_the_database_mode_only_when_it_is_not_in_cluster(flexible_created):
    assert plain(flexible_created.one(GUARD).inputs)["identity"] == {**IDENTITY, "database": "flexibleServer"}


LEGACY = dict(IDENTITY)  # what every stack recorded before `database` existed


def test_a_stack_recorded_before_the_database_key_sees_no_change_in_cluster():
    provider = DataGuardProvider()
    olds = {"identity": LEGACY, "allow_replacement": False}
    assert (
        provider.diff("data-guard", olds, {"identity": dict(IDENTITY), "allow_replacement": False}).changes
        is False
    )


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (LEGACY, {**IDENTITY, "database": "flexibleServer"}),
        ({**IDENTITY, "database": "flexibleServer"}, LEGACY),
    ],
    ids=["to-flexibleServer", "to-inCluster"],
)
def test_the_guard_refuses_a_database_switch_and_names_the_procedure(old, new):
    provider = DataGuardProvider()
    with pytest.raises(DataReplacementRefused) as refused:
        provider.diff(
            "data-guard",
            {"identity": old, "allow_replacement": False},
            {"identity": new, "allow_replacement": False},
        )
    message = str(refused.value)
    before, after = ("inCluster", "flexibleServer") if new != LEGACY else ("flexibleServer", "inCluster")
    assert f"database: {before!r} -> {after!r}" in message and "allowDataReplacement" in message
    if after == "flexibleServer":  # back up, switch, restore; the cluster is a new one
        assert (
            "python /app/backup.py" in message
            and "scripts/cluster-restore latest --cronjob mlflow-gc" in message
        )
        assert "new cluster" in message
    else:
        assert "not done in place" in message and "python /app/backup.py" not in message
    assert "docs/database.md" in message
    allowed = provider.diff("data-guard", {"identity": old}, {"identity": new, "allow_replacement": True})
    assert allowed.changes is True and allowed.replaces == []


def test_the_guard_refuses_another_server_name_unless_allowed():
    provider = DataGuardProvider()
    old = {**IDENTITY, "database": "flexibleServer"}
    new = {**old, "databaseServerName": "mlflow-mysql-restored-0102"}
    with pytest.raises(
        DataReplacementRefused, match="databaseServerName: '' -> 'mlflow-mysql-restored-0102'"
    ):
        provider.diff("data-guard", {"identity": old}, {"identity": new, "allow_replacement": False})
    assert provider.diff(
        "data-guard", {"identity": old}, {"identity": new, "allow_replacement": True}
    ).changes


def test_the_guard_comes_first_with_a_flexible_server_too(flexible_created):
    _assert_the_guard_comes_first(flexible_created)


# --- the tear-down guide matches the lock ------------------------------------------------------------------

_DELETES_IN_DATA_GROUP = re.compile(
    r"^\s*(?:#\s*)?az (?!group lock|lock)[\w -]*\bdelete\b.*<prefix>-data", re.MULTILINE
)


def _code_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)^\s*```", markdown, flags=re.DOTALL | re.MULTILINE)


def test_every_documented_delete_under_the_lock_lifts_it_first_and_puts_it_back(created):
    """The lock refuses any delete in the data group, portal or az, Owner or not: each command block of
    the docs that deletes something there first deletes the very lock the program creates, and a block
    that keeps the rest of the data puts that lock back (pulumi up --refresh, or az with its level)."""
    (lock,) = created.of_type("azure-native:authorization:ManagementLockAtResourceGroupLevel")
    lift = f"az group lock delete --resource-group <prefix>-data --name {lock.inputs['lockName']}"
    recreate = (
        f"az group lock create --resource-group <prefix>-data --name {lock.inputs['lockName']} "
        f"--lock-type {lock.inputs['level']}"
    )
    checked = 0
    for doc in sorted((REPO_ROOT / "docs").glob("*.md")):
        for block in _code_blocks(doc.read_text()):
            deletes = [m.start() for m in _DELETES_IN_DATA_GROUP.finditer(block)]
            if not deletes:
                continue
            checked += 1
            assert lift in block and block.index(lift) < min(deletes), (doc.name, block)
            if "az group delete" not in block:  # the rest of the data stays: so does its lock
                assert "pulumi up --refresh" in block or recreate in block, (doc.name, block)
    assert checked >= 3  # the old project share, one kept resource, the whole group
    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    assert recreate in operations
