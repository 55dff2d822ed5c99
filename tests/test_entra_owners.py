"""EntraOwners (components/entra_owners.py): operators become owners through Graph, and nobody is ever
removed, owners added by hand included.

Graph is a stand-in `az` (run by this interpreter) that keeps each object's owners in a JSON file and
logs every request; it answers a POST of an existing owner as Graph does (400, "already exist").
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from components.entra_owners import EntraOwnersProvider, OwnersError

ALICE = "00000000-0000-0000-0000-0000000000bb"
BOB = "00000000-0000-0000-0000-0000000000b0"
CI = "00000000-0000-0000-0000-0000000000c1"
BY_HAND = "00000000-0000-0000-0000-00000000ha4d"
APP = "applications/11111111-1111-1111-1111-111111111111"

FAKE_AZ = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    state_file = Path(sys.argv[1])
    args = sys.argv[2:]
    state = json.loads(state_file.read_text())
    state["log"].append(args)
    state_file.write_text(json.dumps(state))
    assert args[:2] == ["rest", "--method"], args
    method, url = args[2], args[args.index("--url") + 1]
    base = "https://graph.microsoft.com/v1.0/"
    path = url[len(base):].split("/owners")[0]
    owners = state["owners"].setdefault(path, [])
    if state.get("refuse") == method:
        sys.stderr.write("Forbidden({'error': {'code': 'Authorization_RequestDenied'}})")
        sys.exit(1)
    if method == "get":
        listed = [owner for owner in owners if owner not in state.get("hidden", [])]
        print(json.dumps({"value": [{"id": owner} for owner in listed]}))
    elif method == "post":
        owner = json.loads(args[args.index("--body") + 1])["@odata.id"].rsplit("/", 1)[1]
        if owner in owners:
            sys.stderr.write("Bad Request({'error': {'message': 'One or more added object references "
                             "already exist for the following modified properties: owners.'}})")
            sys.exit(1)
        owners.append(owner)
        state_file.write_text(json.dumps({**state, "owners": {**state["owners"], path: owners}}))
    else:
        sys.exit(f"unexpected method {method}")
    """
)


@pytest.fixture
def graph(tmp_path: Path):
    script = tmp_path / "az.py"
    script.write_text(FAKE_AZ)
    state_file = tmp_path / "graph.json"

    class Graph:
        def __init__(self) -> None:
            self.command = [sys.executable, str(script), str(state_file)]
            self.save({"owners": {}, "log": []})

        def save(self, state) -> None:
            state_file.write_text(json.dumps(state))

        def load(self):
            return json.loads(state_file.read_text())

        def owners(self, path: str = APP) -> list[str]:
            return sorted(self.load()["owners"].get(path, []))

        def methods(self) -> list[str]:
            return [args[2] for args in self.load()["log"]]

    return Graph()


def test_operators_are_added_and_nobody_is_ever_removed(graph):
    # Alice created the application (its owner from creation on); someone added an owner by hand.
    graph.save({"owners": {APP: [ALICE, BY_HAND]}, "log": []})
    provider = EntraOwnersProvider(graph.command)

    created = provider.create({"path": APP, "owners": [ALICE]}).outs
    assert graph.owners() == sorted([ALICE, BY_HAND])
    assert graph.methods() == ["get"]  # already there: nothing posted

    news = {"path": APP, "owners": [ALICE, BOB, CI]}
    assert provider.diff("owners", created, news).changes
    grown = provider.update("owners", created, news).outs
    assert graph.owners() == sorted([ALICE, BOB, BY_HAND, CI])

    # Alice and Bob taken out of the config: no change, so nobody is removed; nor on delete.
    news = {"path": APP, "owners": [CI]}
    assert not provider.diff("owners", grown, news).changes
    provider.delete("owners", grown)
    assert graph.owners() == sorted([ALICE, BOB, BY_HAND, CI])
    assert set(graph.methods()) == {"get", "post"}


def test_an_owner_added_meanwhile_is_no_error(graph):
    """Graph listed the owners, then someone else added one before the POST: Graph's 400 is success."""
    graph.save({"owners": {APP: [ALICE, BOB]}, "log": [], "hidden": [BOB]})
    EntraOwnersProvider(graph.command).create({"path": APP, "owners": [ALICE, BOB]})
    assert graph.methods() == ["get", "post"]
    assert graph.owners() == sorted([ALICE, BOB])


def test_another_application_is_a_replacement():
    provider = EntraOwnersProvider(["az"])
    diff = provider.diff(
        "owners", {"path": APP, "owners": [ALICE]}, {"path": "applications/2", "owners": [ALICE]}
    )
    assert diff.replaces == ["path"]


def test_a_refusal_says_which_permissions_it_takes(graph):
    graph.save({"owners": {APP: [ALICE]}, "log": [], "refuse": "post"})
    with pytest.raises(OwnersError) as refused:
        EntraOwnersProvider(graph.command).create({"path": APP, "owners": [ALICE, BOB]})
    message = str(refused.value)
    assert f"could not make {BOB} an owner of {APP}" in message
    assert "Authorization_RequestDenied" in message
    assert "Application.ReadWrite.All" in message and "docs/security.md#operators" in message
    assert graph.owners() == [ALICE]
