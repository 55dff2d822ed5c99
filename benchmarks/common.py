"""What every benchmark script does the same way: timestamped progress on stderr, a local stack on free
loopback ports in a new directory, and the report written and printed."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from local import LocalStack, StackConfig, free_ports


def log(message: str) -> None:
    """One progress line on stderr (the report alone goes to stdout)."""
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def new_stack(prefix: str, workdir: Path | None = None, **config: Any) -> tuple[Path, LocalStack]:
    """A local stack (not started) under `workdir`, or a new temporary directory, on free loopback ports."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix=prefix))
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)  # noqa: S103 - MariaDB (user mysql) enters it; secrets inside are 0600
    # The OpenID provider's too (--sign-in): two benchmarks may run at once (tests/test_benchmark_smoke.py).
    server, mysql, azurite, oidc = free_ports(4)
    stack = LocalStack(
        StackConfig(
            workdir=workdir / "stack",
            server_port=server,
            mysql_port=mysql,
            azurite_port=azurite,
            oidc_port=oidc,
            **config,
        )
    )
    return workdir, stack


def write_report(output: Path, report: str) -> None:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(report)
    print(report)
