"""`python -m local`: what a new user types and reads (issue 21): the modes and ports `up` remembers and
how to turn each off, and the addresses `up`, `status` and `run-project` print.

No service is started: the stack's start, status and runs are replaced, its state file is real.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import urllib.parse
from pathlib import Path

import pytest

import local.__main__ as cli
from local import LocalStack, StackConfig
from local.stack import RunResult

MODES = {
    "basic": [],
    "https": ["--https"],
    "sign-in": ["--sign-in"],
    "both": ["--https", "--sign-in"],
}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path / "stack"


@pytest.fixture
def started(monkeypatch) -> list[str]:
    """`up` with the services replaced: records start/stop calls; the state is written as start would."""
    calls: list[str] = []

    def start(stack: LocalStack) -> None:
        calls.append("start")
        stack.workdir.mkdir(parents=True, exist_ok=True)
        stack.metrics_port  # noqa: B018  (remembered in the state, as start does through the render)
        for name in stack.config.services:
            stack._record(None, name)  # the state's ports, as each service's start records them

    monkeypatch.setattr(cli, "missing_prerequisites", lambda *a, **k: [])
    monkeypatch.setattr(LocalStack, "start", start)
    monkeypatch.setattr(LocalStack, "stop", lambda stack: calls.append("stop"))
    return calls


def _running(monkeypatch, running: bool = True) -> None:
    def status(stack: LocalStack) -> dict:
        return {n: {"running": running, "pid": 1, "port": 1, "log": None} for n in stack.config.services}

    monkeypatch.setattr(LocalStack, "status", status)


def _config(workdir: Path, *argv: str) -> StackConfig:
    return cli._config(cli.build_parser().parse_args(["--workdir", str(workdir), *argv]))


def test_every_port_the_stack_binds_is_an_up_option_and_remembered(workdir, started, capsys) -> None:
    ports = [f.name for f in dataclasses.fields(StackConfig) if f.name.endswith("_port")]
    assert sorted(ports) == sorted(cli.PORT_FIELDS)
    chosen = {name: 20000 + i for i, name in enumerate(ports)}
    argv = [f"--{name.replace('_', '-')}={port}" for name, port in chosen.items()]
    assert cli.main(["--workdir", str(workdir), "up", "--https", "--sign-in", *argv]) == 0
    # The next commands, given no option, find every port where `up` put it.
    later = _config(workdir, "status")
    assert {name: getattr(later, name) for name in ports} == chosen
    assert later.https and later.sign_in


def test_two_https_stacks_bind_no_common_port(tmp_path) -> None:
    """Two stacks started with different options share no port (5080 and 15000 used to be fixed)."""
    first = _config(tmp_path / "a", "up", "--https", "--sign-in")
    argv = [f"--{name.replace('_', '-')}={30000 + i}" for i, name in enumerate(cli.PORT_FIELDS)]
    second = _config(tmp_path / "b", "up", "--https", "--sign-in", *argv)
    bound = [{getattr(c, name) for name in cli.PORT_FIELDS} for c in (first, second)]
    assert not bound[0] & bound[1]


def test_modes_are_remembered_until_turned_off(workdir, started) -> None:
    assert cli.main(["--workdir", str(workdir), "up", "--https", "--sign-in", "--https-port=6443"]) == 0
    assert (_config(workdir, "status").https, _config(workdir, "status").sign_in) == (True, True)
    assert cli.main(["--workdir", str(workdir), "up", "--no-https"]) == 0
    assert (_config(workdir, "status").https, _config(workdir, "status").sign_in) == (False, True)
    assert cli.main(["--workdir", str(workdir), "up", "--no-sign-in"]) == 0
    assert (_config(workdir, "status").https, _config(workdir, "status").sign_in) == (False, False)
    # Turned on again, a mode serves on the ports it had.
    assert cli.main(["--workdir", str(workdir), "up", "--https"]) == 0
    assert (_config(workdir, "status").https, _config(workdir, "status").https_port) == (True, 6443)


@pytest.mark.parametrize("mode", MODES)
def test_up_says_which_modes_are_on_and_how_to_turn_each_off(workdir, started, capsys, mode) -> None:
    assert cli.main(["--workdir", str(workdir), "up", *MODES[mode]]) == 0
    out = capsys.readouterr().out
    for name, option in (("HTTPS", "https"), ("sign-in", "sign-in")):
        [line] = [x for x in out.splitlines() if x.startswith(f"{name} mode:")]
        if f"--{option}" in MODES[mode]:
            assert " on " in line and f"up --no-{option}` turns it off" in line, line
        else:
            assert " off " in line and f"up --{option}` turns it on" in line, line


def test_turning_a_mode_off_restarts_a_running_stack(workdir, started, monkeypatch, capsys) -> None:
    assert cli.main(["--workdir", str(workdir), "up", "--https"]) == 0
    _running(monkeypatch)
    assert cli.main(["--workdir", str(workdir), "up"]) == 0  # same modes: nothing stopped
    assert started == ["start", "start"]
    assert cli.main(["--workdir", str(workdir), "up", "--no-https"]) == 0
    assert started == ["start", "start", "stop", "start"]
    assert "modes changed" in capsys.readouterr().out


def _printed_address(out: str, prefix: str) -> str:
    [line] = [x for x in out.splitlines() if x.startswith(prefix)]
    return re.search(r"(https?://\S+)", line).group(1)


@pytest.mark.parametrize("mode", MODES)
def test_status_and_run_project_print_the_address_a_browser_uses(
    workdir, started, monkeypatch, capsys, mode
) -> None:
    assert cli.main(["--workdir", str(workdir), "up", *MODES[mode]]) == 0
    up_address = _printed_address(capsys.readouterr().out, "MLflow UI")
    _running(monkeypatch)
    assert cli.main(["--workdir", str(workdir), "status"]) == 0
    status_address = _printed_address(capsys.readouterr().out, "MLflow:")
    monkeypatch.setattr(
        LocalStack, "run_project", lambda stack, entry, *a, **k: RunResult(entry, "0" * 32, 0, "", "runner")
    )
    assert cli.main(["--workdir", str(workdir), "run-project"]) == 0
    run_address = _printed_address(capsys.readouterr().out, "run-project: done")
    assert run_address.endswith("/#/experiments")

    stack = LocalStack(_config(workdir, "status"))
    address = urllib.parse.urlsplit(status_address)
    assert up_address == status_address == run_address.removesuffix("/#/experiments")
    if "--https" in MODES[mode]:
        assert (address.scheme, address.port) == ("https", stack.config.https_port)
    else:
        assert (address.scheme, address.port) == ("http", stack.config.server_port)
    if "--sign-in" in MODES[mode]:
        # Sign-in ends at the redirect URI: a login started at another host loses its state cookie.
        assert address.hostname == "localhost"
        assert stack.redirect_uri == f"{status_address}/callback"


@pytest.mark.parametrize("page", ["README.md", "docs/local-stack.md"])
def test_documented_run_project_commands_run_each_entry_point_once(page, repo_root: Path) -> None:
    """A reader runs a code block's commands one after the other: none may repeat what an earlier did
    (`run-project` without -e runs train, then evaluate)."""
    text = (repo_root / page).read_text()
    blocks = re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    commands = 0
    for block in blocks:
        ran: list[tuple[str, str]] = []
        for line in block.splitlines():
            if " -m local run-project" not in line:
                continue
            argv = shlex.split(line, comments=True)
            args = cli.build_parser().parse_args(argv[argv.index("local") + 1 :])
            for entry_point in cli.ENTRY_POINTS[args.entry_point]:
                assert (args.experiment, entry_point) not in ran, f"{page}: {line.strip()!r} repeats it"
                ran.append((args.experiment, entry_point))
            commands += 1
    assert commands, f"{page} shows no run-project command"
