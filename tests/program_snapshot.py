"""What a checkout's Pulumi program declares, as JSON: `python tests/program_snapshot.py <repo> <config>`.

Runs `<repo>/__main__.py` under the recording mocks of tests/pulumi_mocks.py, in this fresh process,
with `<repo>` first on sys.path (so its own `settings` and `components` are the ones imported), and
prints every resource's type, name, inputs (secrets unwrapped) and the options that decide a diff.
Used by tests/test_convergence.py to compare two runs of the program, or two checkouts, byte for byte.

`--reverse-listings` makes every directory listing (os.scandir, os.listdir) come back in reverse name
order, so that a result depending on the file system's walk order shows up as a difference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent

# Options that change what `pulumi up` does with a resource (dependencies are sorted: their order is
# the order in which outputs resolved, which the engine does not diff).
DIFF_OPTIONS = (
    "retainOnDelete",
    "protect",
    "ignoreChanges",
    "replaceOnChanges",
    "deleteBeforeReplace",
    "importId",
    "additionalSecretOutputs",
)


def _reverse_listings() -> None:
    real_scandir, real_listdir = os.scandir, os.listdir

    class _Reversed:
        def __init__(self, path):
            with real_scandir(path) as entries:
                self._entries = sorted(entries, key=lambda entry: entry.name, reverse=True)

        def __iter__(self):
            return self

        def __next__(self):
            if not self._entries:
                raise StopIteration
            return self._entries.pop(0)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def close(self):
            pass

    os.scandir = lambda path=".": _Reversed(path)
    os.listdir = lambda path=".": sorted(real_listdir(path), reverse=True)


def snapshot(repo: Path, config: dict) -> dict:
    sys.path[:0] = [str(repo), str(TESTS_DIR)]
    from pulumi_mocks import plain, run_program

    run = run_program(config, program=repo / "__main__.py")
    resources = {}
    for resource in run.resources:
        options = {key: resource.options.get(key) for key in DIFF_OPTIONS}
        options["dependencies"] = sorted(resource.options.get("dependencies", []))
        resources[f"{resource.type}::{resource.name}"] = {
            "inputs": plain(resource.inputs),
            "options": options,
            "provider": resource.provider,
        }
    return {"resources": resources, "exports": plain(run.exports)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path)
    parser.add_argument("config", help="stack config as JSON")
    parser.add_argument("--reverse-listings", action="store_true")
    args = parser.parse_args()
    if args.reverse_listings:
        _reverse_listings()
    os.chdir(args.repo)  # as `pulumi up` runs the program: from the project directory
    json.dump(snapshot(args.repo.resolve(), json.loads(args.config)), sys.stdout, sort_keys=True, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
