"""Changes Azure cannot make in place stop before anything changes, naming the procedure.

`systemNodeVmSize` (AKS cannot resize a node pool) and `mysqlDiskSku` (a disk's type changes only while
no running VM has it attached) are recorded by the in-place guard, which everything else waits for. Its
diff refuses a change of either, naming the key, both values, the downtime and the procedure, until
Azure has the new value (read with `az`, replaced here). What the program declares (the guard's inputs,
its place before everything else, the jobs pool replaced old-first) is checked on the runs
tests/test_foundation.py and tests/test_data_lifecycle.py already make.
"""

from __future__ import annotations

import re

import pytest
from pulumi_mocks import REPO_ROOT, SUBSCRIPTION_ID
from test_readme import github_anchor

from components import in_place_guard
from components.in_place_guard import InPlaceChangeRefused, InPlaceGuardProvider

AZURE = {
    "platform_group": "mlflow-platform",
    "cluster": "mlflow-aks",
    "system_pool": "system",
    "data_group": "mlflow-data",
    "mysql_disk": "mlflow-mysql",
    "subscription": SUBSCRIPTION_ID,
}
VALUES = {"systemNodeVmSize": "Standard_D4s_v5", "mysqlDiskSku": "StandardSSD_LRS"}


class FakeAzure:
    """What `az` answers: the value Azure has for each query, or an error."""

    def __init__(self, **has: str | Exception):
        self.has, self.asked = has, []

    def __call__(self, args: list[str]) -> str:
        self.asked.append(args)
        key = "systemNodeVmSize" if args[:2] == ["aks", "nodepool"] else "mysqlDiskSku"
        answer = self.has[key]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _diff(monkeypatch, azure: FakeAzure, change: dict[str, str]):
    monkeypatch.setattr(in_place_guard, "az", azure)
    olds = {"values": VALUES, "azure": AZURE}
    return InPlaceGuardProvider().diff("in-place-guard", olds, {**olds, "values": {**VALUES, **change}})


@pytest.mark.parametrize(
    ("key", "new", "says"),
    [
        ("systemNodeVmSize", "Standard_D8s_v5", "AKS cannot change the VM size of an existing node pool"),
        ("mysqlDiskSku", "Premium_ZRS", "MySQL stops for the change, a few minutes of downtime"),
    ],
)
def test_a_change_azure_cannot_make_in_place_is_refused_naming_the_procedure(monkeypatch, key, new, says):
    azure = FakeAzure(**VALUES)  # Azure still has the old value
    with pytest.raises(InPlaceChangeRefused) as refused:
        _diff(monkeypatch, azure, {key: new})
    message = str(refused.value)
    assert "nothing was changed" in message
    assert f"{key}: {VALUES[key]!r} -> {new!r} (Azure has {VALUES[key]!r})" in message
    assert says in message
    assert "Procedure: docs/operations.md" in message and f"passes once Azure has {new!r}" in message
    (other,) = set(VALUES) - {key}
    assert other not in message
    (asked,) = azure.asked
    assert asked[-2:] == ["--subscription", SUBSCRIPTION_ID]


def test_once_azure_has_the_new_value_the_change_goes_through(monkeypatch):
    new = {"systemNodeVmSize": "Standard_D8s_v5", "mysqlDiskSku": "Premium_LRS"}
    azure = FakeAzure(**new)
    assert _diff(monkeypatch, azure, new).changes is True
    assert sorted(azure.asked) == sorted(
        [
            [
                *("aks", "nodepool", "show", "--resource-group", "mlflow-platform", "--cluster-name"),
                *("mlflow-aks", "--name", "system", "--query", "vmSize", "--subscription", SUBSCRIPTION_ID),
            ],
            [
                *("disk", "show", "--resource-group", "mlflow-data", "--name", "mlflow-mysql"),
                *("--query", "sku.name", "--subscription", SUBSCRIPTION_ID),
            ],
        ]
    )


def test_when_azure_cannot_be_asked_the_change_is_refused_saying_why(monkeypatch):
    azure = FakeAzure(systemNodeVmSize=RuntimeError("Please run 'az login' to setup account."))
    with pytest.raises(InPlaceChangeRefused, match=r"Azure could not be asked \(Please run 'az login'"):
        _diff(monkeypatch, azure, {"systemNodeVmSize": "Standard_D8s_v5"})


def test_no_change_asks_azure_nothing(monkeypatch):
    azure = FakeAzure()
    assert _diff(monkeypatch, azure, {}).changes is False
    # The disk going with a switch to flexibleServer is the data guard's refusal, not this one's.
    olds = {"values": VALUES, "azure": AZURE}
    news = {"values": {"systemNodeVmSize": VALUES["systemNodeVmSize"]}, "azure": AZURE}
    assert InPlaceGuardProvider().diff("in-place-guard", olds, news).changes is True
    assert azure.asked == []


def test_az_is_run_with_tab_separated_output_and_its_error_reported(monkeypatch):
    calls = []

    class Done:
        def __init__(self, returncode, stdout, stderr):
            self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    def fake_run(argv, **kwargs):
        calls.append(argv)
        if "missing" in argv:
            return Done(3, "", "WARNING: x\nERROR: (ResourceNotFound) The Resource was not found.\n")
        return Done(0, "Premium_LRS\n", "")

    monkeypatch.setattr(in_place_guard.subprocess, "run", fake_run)
    assert in_place_guard.run_az(["disk", "show"]) == "Premium_LRS"
    assert calls[0] == ["az", "disk", "show", "--output", "tsv"]
    with pytest.raises(RuntimeError, match="ResourceNotFound"):
        in_place_guard.run_az(["disk", "show", "missing"])


def test_each_procedure_the_refusal_names_is_in_the_operations_guide():
    operations = (REPO_ROOT / "docs" / "operations.md").read_text()
    headings = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", operations, flags=re.MULTILINE)}
    for procedure in in_place_guard._PROCEDURE.values():
        (title,) = re.fullmatch(r"docs/operations\.md, '(.+)'", procedure).groups()
        assert github_anchor(title) in headings, procedure
