"""The API server's authorized ranges are checked against this machine before anything is created.

With `apiServerAuthorizedIpRanges` set, every run (`pulumi preview` included) finds the public address
the API server will see from here, from config `deployerIpAddress` or detected, and stops before the
first resource or lookup unless a range holds it, naming the key and the address. A failed detection
stops the run too, naming the key to set. Detection is replaced in every test: none reaches the network.
"""

from __future__ import annotations

import io
import urllib.error

import pytest
from pulumi_mocks import RecordingMocks, run_program

from components import deployer_address
from components.deployer_address import (
    ADDRESS_SERVICES,
    ApiServerRangesError,
    ask_services,
    require_api_server_reach,
)

RANGES = ("203.0.113.0/24", "198.51.100.7/32")
OUTSIDE = "192.0.2.55"


def _never_detect() -> str:
    raise AssertionError("the address must not be detected here")


def test_no_ranges_means_nothing_to_check_and_nothing_detected(monkeypatch):
    monkeypatch.setattr(deployer_address, "detect_public_address", _never_detect)
    assert require_api_server_reach((), None) is None
    assert require_api_server_reach((), "198.51.100.7") is None


@pytest.mark.parametrize("address", ["203.0.113.200", "198.51.100.7"])
def test_an_address_inside_a_range_passes(monkeypatch, address):
    monkeypatch.setattr(deployer_address, "detect_public_address", lambda: address)
    assert require_api_server_reach(RANGES, None) == address
    monkeypatch.setattr(deployer_address, "detect_public_address", _never_detect)
    assert require_api_server_reach(RANGES, address) == address  # given: not detected


@pytest.mark.parametrize("given", [None, OUTSIDE], ids=["detected", "given"])
def test_an_address_outside_every_range_stops_naming_the_key_and_the_address(monkeypatch, given):
    monkeypatch.setattr(deployer_address, "detect_public_address", lambda: OUTSIDE)
    with pytest.raises(ApiServerRangesError) as stopped:
        require_api_server_reach(RANGES, given)
    message = str(stopped.value)
    assert f"apiServerAuthorizedIpRanges does not include this machine's public address {OUTSIDE}" in message
    assert "nothing was created" in message
    assert all(cidr in message for cidr in RANGES)
    # The fix, ready to paste: the address appended as the next range.
    assert f"pulumi config set --path 'apiServerAuthorizedIpRanges[2]' {OUTSIDE}/32" in message
    assert ("config deployerIpAddress" in message) is (given is not None)
    assert ("set deployerIpAddress if that is wrong" in message) is (given is None)


def test_a_failed_detection_stops_naming_the_key_to_set(monkeypatch):
    def offline() -> str:
        raise LookupError("https://api.ipify.org: [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(deployer_address, "detect_public_address", offline)
    with pytest.raises(ApiServerRangesError) as stopped:
        require_api_server_reach(RANGES, None)
    message = str(stopped.value)
    assert "could not be detected" in message and "nothing was created" in message
    assert "Temporary failure in name resolution" in message
    assert "pulumi config set deployerIpAddress <IPv4 address>" in message


class _Answer(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_detection_takes_the_first_service_that_answers_an_ipv4_address(monkeypatch):
    asked = []

    def urlopen(url, timeout):
        asked.append((url, timeout))
        if url == ADDRESS_SERVICES[0]:
            raise urllib.error.URLError("timed out")
        return _Answer(b"198.51.100.23\n")

    monkeypatch.setattr(deployer_address.urllib.request, "urlopen", urlopen)
    assert ask_services() == "198.51.100.23"
    assert [url for url, _ in asked] == list(ADDRESS_SERVICES)
    assert all(url.startswith("https://") and timeout > 0 for url, timeout in asked)


def test_detection_fails_naming_each_service_when_none_gives_an_ipv4_address(monkeypatch):
    answers = {ADDRESS_SERVICES[0]: b"<html>captive portal</html>", ADDRESS_SERVICES[1]: b"2001:db8::1"}
    monkeypatch.setattr(
        deployer_address.urllib.request, "urlopen", lambda url, timeout: _Answer(answers[url])
    )
    with pytest.raises(LookupError) as failed:
        ask_services()
    assert all(url in str(failed.value) for url in ADDRESS_SERVICES)


# --- in the program: before the first resource or lookup, on preview too ---------------------------------


@pytest.mark.parametrize("preview", [False, True], ids=["up", "preview"])
def test_the_program_stops_before_anything_from_outside_the_ranges(preview):
    mocks = RecordingMocks()
    with pytest.raises(ApiServerRangesError) as stopped:
        run_program(
            {"apiServerAuthorizedIpRanges": list(RANGES)},
            mocks=mocks,
            preview=preview,
            deployer_address=OUTSIDE,
        )
    assert mocks.resources == [] and mocks.calls == []
    assert "apiServerAuthorizedIpRanges" in str(stopped.value) and OUTSIDE in str(stopped.value)


def test_the_program_stops_before_anything_when_detection_fails():
    mocks = RecordingMocks()
    with pytest.raises(ApiServerRangesError) as stopped:
        run_program(
            {"apiServerAuthorizedIpRanges": list(RANGES)},
            mocks=mocks,
            deployer_address=LookupError("no route to api.ipify.org"),
        )
    assert mocks.resources == [] and mocks.calls == []
    assert "deployerIpAddress" in str(stopped.value)


def test_the_program_checks_a_given_address_without_detecting():
    config = {"apiServerAuthorizedIpRanges": ["198.51.100.0/28"], "deployerIpAddress": "198.51.100.99"}
    mocks = RecordingMocks()
    with pytest.raises(ApiServerRangesError) as stopped:
        run_program(config, mocks=mocks, deployer_address=LookupError("must not be asked"))
    assert "198.51.100.99 (config deployerIpAddress)" in str(stopped.value)
    assert mocks.resources == [] and mocks.calls == []
