"""Many operators (issue 18.2): who owns the Entra ID applications and holds the cluster role comes from
config `operators` (or the stack's first deployer, remembered by the Operators ledger), never from
whoever runs `pulumi up` this time.

Program runs chain the ledger's state from one run to the next as the engine would (RecordingMocks plays
the provider's create, diff and update): a later run by someone else sees the first run's ledger.
"""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_mocks import (
    DEPLOYING_USER_OBJECT_ID,
    OPERATORS_TYPE,
    ProgramRun,
    RecordingMocks,
    plain,
    run_program,
)

from components import roles
from components.operators import NotAnOperatorError, OperatorsProvider

ALICE = DEPLOYING_USER_OBJECT_ID  # a person, who deploys the stack first
BOB = "00000000-0000-0000-0000-0000000000b0"  # a colleague
CI = "00000000-0000-0000-0000-0000000000c1"  # the CI pipeline's service principal
GROUP = "00000000-0000-0000-0000-00000000900b"  # an Entra ID security group of operators
PRINCIPAL_TYPES = {ALICE: "User", BOB: "User", CI: "ServicePrincipal", GROUP: "Group"}

APPLICATION = "azuread:index/application:Application"
SERVICE_PRINCIPAL = "azuread:index/servicePrincipal:ServicePrincipal"
ROLE_ASSIGNMENT = "azure-native:authorization:RoleAssignment"
CLUSTER_ACCESS = "pulumi-python:dynamic/mlflow-aks:ClusterAccess"
ENTRA_OWNERS = "pulumi-python:dynamic/mlflow-aks:EntraOwners"
ENTRA = {
    "auth": "entra",
    "entraAllowedGroups": ["0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"],
    "entraAdminGroups": ["0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f1"],
}


def run_as(caller: str, config: dict[str, Any], state: dict[str, Any] | None = None) -> ProgramRun:
    """One `pulumi up` by `caller`; `state`: the ledger an earlier run left (None: a new stack)."""
    mocks = RecordingMocks(
        caller_object_id=caller,
        deploying_principal_type=PRINCIPAL_TYPES[caller],
        principal_types=PRINCIPAL_TYPES,
        operators_state=state,
    )
    run = run_program(config, mocks=mocks)
    run.ledger = mocks.operators_outputs  # type: ignore[attr-defined]
    return run


def owners(run: ProgramRun) -> dict[str, list[str]]:
    azuread = run.of_type(APPLICATION) + run.of_type(SERVICE_PRINCIPAL)
    return {r.name: sorted(plain(r.inputs["owners"])) for r in azuread}


def owners_added(run: ProgramRun) -> dict[str, tuple[str, list[str]]]:
    """EntraOwners name -> (Graph path, owners it adds), checked against the application or SP it names."""
    added = {}
    for resource in run.of_type(ENTRA_OWNERS):
        target = run.named(resource.name.replace("-owners", ""))
        kind = "applications" if target.type == APPLICATION else "servicePrincipals"
        assert plain(resource.inputs["path"]) == f"{kind}/{target.outputs['objectId']}"
        # The provider would set the owner list to exactly its input on any change: creation only.
        assert "owners" in target.options["ignoreChanges"], target.name
        added[resource.name] = sorted(plain(resource.inputs["owners"]))
    return added


def cluster_admins(run: ProgramRun) -> dict[str, tuple[str, str]]:
    """Assignment name -> (principal, principal type) of AKS RBAC Cluster Admin."""
    return {
        r.name: (r.inputs["principalId"], r.inputs["principalType"])
        for r in run.of_type(ROLE_ASSIGNMENT)
        if plain(r.inputs["roleDefinitionId"]).endswith(roles.AKS_RBAC_CLUSTER_ADMIN)
    }


def declared(run: ProgramRun) -> dict[tuple[str, str], Any]:
    """Every resource's inputs and diff-deciding options: what a `pulumi up` would compare."""
    return {
        (r.type, r.name): {
            "inputs": plain(r.inputs),
            "aliases": r.options.get("aliases"),
            "ignoreChanges": r.options.get("ignoreChanges"),
        }
        for r in run.resources
    }


def differences(first: ProgramRun, second: ProgramRun) -> dict[tuple[str, str], Any]:
    before, after = declared(first), declared(second)
    assert set(before) == set(after), set(before) ^ set(after)
    changed = {}
    for key in before:
        if before[key] != after[key]:
            inputs_before, inputs_after = before[key]["inputs"], after[key]["inputs"]
            changed[key] = sorted(k for k in inputs_before if inputs_before[k] != inputs_after.get(k))
    return changed


# What may differ between two runs by different principals: the access check waits for the one running
# it, and the ledger is told who that is (neither is an owner or a role).
RUNNER_ONLY = {
    (CLUSTER_ACCESS, "cluster-access"): ["principal_id"],
    (OPERATORS_TYPE, "operators"): ["caller"],
}

CASES = {
    "operators": ({**ENTRA, "operators": [ALICE, BOB, CI]}, ALICE, CI),
    "operators-and-group": ({"operators": [ALICE, CI], "operatorsGroup": GROUP}, CI, ALICE),
}


def test_first_run_with_empty_operators_makes_the_deployer_owner_and_cluster_admin():
    run = run_as(ALICE, ENTRA)
    assert owners(run) == {
        name: [ALICE] for name in ("deployer-app", "deployer-sp", "sign-in-app", "sign-in-sp")
    }
    assert cluster_admins(run) == {"cluster-deployer-cluster-admin": (ALICE, "User")}
    assert run.exports["firstDeployer"] == ALICE
    assert run.exports["owners"] == [ALICE]


def test_with_empty_operators_the_first_deployer_stays_the_operator_and_nobody_else_may_run():
    first = run_as(ALICE, {})
    again = run_as(ALICE, {}, first.ledger)
    assert differences(first, again) == {}
    with pytest.raises(NotAnOperatorError) as refused:
        run_as(BOB, {}, first.ledger)
    message = str(refused.value)
    assert BOB in message and ALICE in message and "operators" in message
    assert "nothing was changed" in message


@pytest.mark.parametrize("case", list(CASES))
def test_two_runs_by_different_principals_declare_no_owner_or_role_change(case):
    config, first_runner, second_runner = CASES[case]
    first = run_as(first_runner, config)
    second = run_as(second_runner, config, first.ledger)

    assert differences(first, second) == {
        key: value for key, value in RUNNER_ONLY.items() if key in declared(first)
    }
    applications = ["deployer-app", "deployer-sp"] + (
        ["sign-in-app", "sign-in-sp"] if "auth" in config else []
    )
    assert owners(second) == {name: sorted(config["operators"]) for name in applications}
    assert owners_added(second) == {f"{name}-owners": sorted(config["operators"]) for name in applications}
    assert second.exports["firstDeployer"] == first_runner
    group = config.get("operatorsGroup")
    if group:
        assert cluster_admins(second) == {"cluster-operators-group-cluster-admin": (GROUP, "Group")}
    else:
        assert cluster_admins(second) == {
            f"cluster-operator-{operator}-cluster-admin": (operator, PRINCIPAL_TYPES[operator])
            for operator in config["operators"]
        }
    access = plain(second.one(CLUSTER_ACCESS).inputs)
    assert access["principal_id"] == second_runner
    admin_ids = sorted(second.named(name).id for name in cluster_admins(second))
    assert access["role_assignment_id"] == ",".join(admin_ids)


def test_adding_operators_keeps_the_first_deployer_assignment_and_owners_are_never_removed():
    """The first deployer alone, then a list: the first deployer's assignment becomes the first listed
    operator's (an alias, no replacement), new operators are added; then one taken out of the list loses
    the cluster role but stays an owner."""
    first = run_as(ALICE, {})
    listed = run_as(ALICE, {"operators": [ALICE, CI]}, first.ledger)
    assert owners(listed) == {"deployer-app": [ALICE, CI], "deployer-sp": [ALICE, CI]}
    assert owners_added(listed) == {"deployer-app-owners": [ALICE, CI], "deployer-sp-owners": [ALICE, CI]}
    assert cluster_admins(listed) == {
        f"cluster-operator-{ALICE}-cluster-admin": (ALICE, "User"),
        f"cluster-operator-{CI}-cluster-admin": (CI, "ServicePrincipal"),
    }

    def names_the_first_deployers(alias: str) -> bool:
        return 'name: "cluster-deployer-cluster-admin"' in alias

    kept = listed.named(f"cluster-operator-{ALICE}-cluster-admin")
    assert any(map(names_the_first_deployers, kept.options["aliases"]))
    added = listed.named(f"cluster-operator-{CI}-cluster-admin")
    assert not any(map(names_the_first_deployers, added.options["aliases"]))

    # CI takes Alice out: Alice keeps ownership (never removed by a later run), not the cluster role.
    narrowed = run_as(CI, {"operators": [CI]}, listed.ledger)
    assert owners(narrowed) == {"deployer-app": [ALICE, CI], "deployer-sp": [ALICE, CI]}
    assert owners_added(narrowed) == owners_added(listed)
    assert cluster_admins(narrowed) == {f"cluster-operator-{CI}-cluster-admin": (CI, "ServicePrincipal")}
    assert narrowed.exports["firstDeployer"] == ALICE


def test_a_new_operator_cannot_make_itself_an_owner():
    first = run_as(ALICE, {})
    with pytest.raises(NotAnOperatorError) as refused:
        run_as(BOB, {"operators": [ALICE, BOB]}, first.ledger)
    assert f"{BOB} is in config `operators` but does not own" in str(refused.value)
    assert ALICE in str(refused.value)


# The ledger's provider on its own (milliseconds): what the engine does with its state.


def test_ledger_records_the_first_deployer_once_and_owners_only_grow():
    provider = OperatorsProvider()
    created = provider.create({"caller": ALICE, "operators": []}).outs
    assert (created["first_deployer"], created["owners"]) == (ALICE, [ALICE])

    news = {"caller": ALICE, "operators": [ALICE, BOB]}
    assert provider.diff("operators", created, news).changes
    grown = provider.update("operators", created, news).outs
    assert (grown["first_deployer"], grown["owners"]) == (ALICE, sorted([ALICE, BOB]))

    news = {"caller": BOB, "operators": [BOB]}
    assert provider.diff("operators", grown, news).changes
    shrunk = provider.update("operators", grown, news).outs
    assert (shrunk["first_deployer"], shrunk["owners"]) == (ALICE, sorted([ALICE, BOB]))
    # Who runs it is no change.
    assert not provider.diff("operators", shrunk, {"caller": BOB, "operators": [BOB]}).changes


def test_a_new_stack_with_operators_refuses_a_caller_not_listed():
    with pytest.raises(NotAnOperatorError, match="config `operators`"):
        OperatorsProvider().create({"caller": BOB, "operators": [ALICE, CI]})


def test_the_first_deployer_is_listed_first_when_operators_are_first_set():
    provider = OperatorsProvider()
    created = provider.create({"caller": ALICE, "operators": []}).outs
    with pytest.raises(NotAnOperatorError, match="put it first"):
        provider.diff("operators", created, {"caller": ALICE, "operators": [CI, ALICE]})
    assert provider.diff("operators", created, {"caller": ALICE, "operators": [ALICE, CI]}).changes


def test_operators_once_listed_never_go_back_to_empty():
    """The first deployer's assignment became the first operator's: an empty list would make it again,
    twice for one principal."""
    provider = OperatorsProvider()
    created = provider.create({"caller": ALICE, "operators": []}).outs
    listed = provider.update("operators", created, {"caller": ALICE, "operators": [ALICE, CI]}).outs
    with pytest.raises(NotAnOperatorError, match="cannot go back to empty"):
        provider.diff("operators", listed, {"caller": ALICE, "operators": []})
