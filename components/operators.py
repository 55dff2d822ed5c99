"""Who operates the stack: the owners of its Entra ID applications and service principals, and who
holds "Azure Kubernetes Service RBAC Cluster Admin" on its cluster.

Config `operators` lists them (object ids of people and CI service principals). Left empty, the one
operator is the stack's first deployer: whoever ran the `pulumi up` that created this ledger. The
program cannot remember anything between runs itself, so `Operators` is a small dynamic resource whose
state does:

- `first_deployer`: the caller of the run that created it, never changed afterwards. A colleague's
  `pulumi up` on the same config declares the same owners and the same cluster role, not their own.
- `owners`: every operator the stack has ever had (the first deployer when none were configured).
  It only grows: an operator taken out of `operators` stays an owner. The applications take it when they
  are created, and components/entra_owners.py adds later operators; nothing ever removes an owner.

It also refuses early, in `pulumi preview` too (diff runs there), a run by someone who is not an
operator: they could not manage the applications (a Graph 403 half-way) nor reach the cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pulumi
from pulumi import dynamic


class NotAnOperatorError(RuntimeError):
    """The principal running `pulumi up` is not one of the stack's operators; the message says what to do."""


def _add_hint(caller: str) -> str:
    return (
        f"an operator adds it with `pulumi config set --path 'operators[<next index>]' {caller}` and "
        "runs `pulumi up` (docs/security.md#operators)"
    )


def check_caller(caller: str, first_deployer: str, operators: Sequence[str], owners: Sequence[str]) -> None:
    """Raise NotAnOperatorError unless `caller` may run `pulumi up` on this stack.

    With `operators` empty the first deployer is the one operator; otherwise the caller must be listed
    and already be an owner (an operator added by this very change cannot yet manage the applications:
    an existing one runs it first).
    """
    listed = list(operators) or [first_deployer]
    if caller not in listed:
        who = "the stack's first deployer" if not operators else "config `operators`"
        raise NotAnOperatorError(
            f"the principal running `pulumi up` ({caller}) is not an operator of this stack ({who}: "
            f"{', '.join(listed)}); nothing was changed. It would not own the Entra ID applications nor "
            f"hold the cluster role: {_add_hint(caller)}"
        )
    if caller not in owners:
        raise NotAnOperatorError(
            f"{caller} is in config `operators` but does not own the stack's Entra ID applications yet; "
            f"nothing was changed. One of the current owners ({', '.join(owners)}) runs `pulumi up` with "
            "this config first, which makes it an owner"
        )


def check_transition(first_deployer: str, old_operators: Sequence[str], operators: Sequence[str]) -> None:
    """Moving from the first deployer alone to a list: list the first deployer first, if at all; and a
    list never goes back to empty.

    The first listed operator's cluster role takes over the first deployer's assignment (an alias in
    components/cluster.py); a second assignment of the same role to the same principal on the same scope
    is refused by Azure (RoleAssignmentExists,
    https://learn.microsoft.com/azure/role-based-access-control/troubleshooting#symptom---role-assignment-already-exists).
    """
    if old_operators and not operators:
        # The first deployer's assignment went to the first listed operator: it cannot come back by name.
        raise NotAnOperatorError(
            "config `operators` cannot go back to empty once it listed operators: keep at least one "
            f"(the stack's first deployer is {first_deployer}); nothing was changed"
        )
    if old_operators or not operators:
        return
    if first_deployer in operators and operators[0] != first_deployer:
        raise NotAnOperatorError(
            f"config `operators` lists the stack's first deployer ({first_deployer}) but not first: put "
            "it first, so that its cluster role assignment is kept rather than made twice (nothing was "
            "changed)"
        )


class OperatorsProvider(dynamic.ResourceProvider):
    """Create records the caller as first deployer; only a new operator list is a change."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        caller, operators = props["caller"], list(props["operators"])
        owners = sorted(set(operators) or {caller})
        # A new stack (or the first run after upgrading to this ledger): the caller founds it.
        check_caller(caller, caller, operators, owners if operators else [caller])
        outs = {"caller": caller, "operators": operators, "first_deployer": caller, "owners": owners}
        return dynamic.CreateResult(id_="operators", outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        operators = list(news["operators"])
        check_caller(news["caller"], olds["first_deployer"], operators, olds["owners"])
        check_transition(olds["first_deployer"], list(olds["operators"]), operators)
        # Who runs it is no change: the first deployer and the owners stay what the state says.
        return dynamic.DiffResult(
            changes=operators != list(olds["operators"]), replaces=[], delete_before_replace=False
        )

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        operators = list(news["operators"])
        outs = {
            "caller": news["caller"],
            "operators": operators,
            "first_deployer": olds["first_deployer"],
            "owners": sorted(set(olds["owners"]) | set(operators)),
        }
        return dynamic.UpdateResult(outs=outs)


class Operators(dynamic.Resource, module="mlflow-aks", name="Operators"):
    """The stack's operators: `first_deployer` (fixed at creation) and `owners` (only ever grows)."""

    first_deployer: pulumi.Output[str]
    owners: pulumi.Output[list[str]]

    def __init__(
        self,
        name: str,
        *,
        caller: pulumi.Input[str],
        operators: Sequence[str],
        provider: OperatorsProvider | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {"caller": caller, "operators": list(operators), "first_deployer": None, "owners": None}
        super().__init__(provider or OperatorsProvider(), name, props, opts)
