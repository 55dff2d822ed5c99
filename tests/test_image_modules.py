"""tests/image_modules.py: a test imports the tracking-server image's modules as the image does (from one
directory, importing each other), gets its own copies, and leaves no trace for the next test."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from tests import image_modules


def cached() -> dict:
    return {name: sys.modules.get(name) for name in image_modules.NAMES}


def test_a_test_gets_its_own_image_modules_and_leaves_none_behind():
    path = list(sys.path)
    earlier = types.ModuleType("fast_store")  # what an earlier test might have left cached
    with pytest.MonkeyPatch.context() as outer:
        outer.setitem(sys.modules, "fast_store", earlier)
        outer.delitem(sys.modules, "fast_metrics", raising=False)
        before = cached()
        with pytest.MonkeyPatch.context() as monkeypatch:
            fast_metrics = image_modules.load(monkeypatch, "fast_metrics")
            fast_store = sys.modules["fast_store"]  # fast_metrics imports it, as in the image's /app
            assert fast_store is not earlier
            assert (
                Path(fast_metrics.__file__).parent
                == Path(fast_store.__file__).parent
                == image_modules.IMAGE_DIR
            )
            again = image_modules.load(monkeypatch, "fast_metrics")
            assert again is not fast_metrics and sys.modules["fast_store"] is not fast_store
        assert cached() == before and sys.path == path
        assert sys.modules["fast_store"] is earlier and "fast_metrics" not in sys.modules


def test_both_history_endpoints_parse_requests_with_one_copy_of_mlflows_code(monkeypatch):
    """fast_store's get-history endpoint and fast_metrics', which replaces it, share `history_request`."""
    fast_metrics = image_modules.load(monkeypatch, "fast_metrics")
    assert fast_metrics.history_request is sys.modules["fast_store"].history_request
