"""A light HTTP load generator: one asyncio process, aiohttp, one kept-alive connection per client.

Each simulated client is a coroutine that owns exactly one TCP connection (a connector with limit 1)
and sends its requests back to back, as a training loop calling MlflowClient does. Loops are bounded
by both a deadline and a request count, and only ever target the URL they are given (loopback here).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp

# One request: (session, client index, sequence number) -> True when the server answered 2xx.
Request = Callable[[aiohttp.ClientSession, int, int], Awaitable[bool]]


@dataclass
class OpResult:
    name: str
    clients: int
    ok: int = 0
    errors: int = 0
    elapsed: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    # CPU seconds the server's process tree used during the measurement (set by the caller).
    server_cpu_s: float = float("nan")

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu_s * 1000.0 / self.ok if self.ok else float("nan")

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        # Nearest-rank percentile: the smallest value with at least q of the samples at or below it.
        rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 1))))
        return ordered[rank - 1]

    @property
    def p50(self) -> float:
        return self.percentile(0.50)

    @property
    def p95(self) -> float:
        return self.percentile(0.95)


def basic_auth_header(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def new_session(base_url: str, headers: dict[str, str]) -> aiohttp.ClientSession:
    """A session pinned to one kept-alive connection."""
    connector = aiohttp.TCPConnector(limit=1, force_close=False, keepalive_timeout=60)
    return aiohttp.ClientSession(
        base_url=base_url,
        headers=headers,
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=60),
    )


@dataclass
class _Run:
    request: Request
    warmup: int
    max_requests: int
    result: OpResult
    start: asyncio.Event = field(default_factory=asyncio.Event)
    deadline: float = float("inf")
    sent: int = 0
    warm: int = 0


async def _client_loop(session: aiohttp.ClientSession, index: int, run: _Run) -> None:
    # Warm-up on this client's own connection: opens it and fills per-process caches, unmeasured.
    for seq in range(run.warmup):
        await run.request(session, index, -1 - seq)
    run.warm += 1
    await run.start.wait()
    seq = 0
    while time.perf_counter() < run.deadline and run.sent < run.max_requests:
        run.sent += 1
        t0 = time.perf_counter()
        try:
            ok = await run.request(session, index, seq)
        except (TimeoutError, aiohttp.ClientError):
            ok = False
        t1 = time.perf_counter()
        seq += 1
        if ok:
            run.result.ok += 1
            run.result.latencies_ms.append((t1 - t0) * 1000.0)
        else:
            run.result.errors += 1


async def run_op(
    name: str,
    base_url: str,
    headers: dict[str, str],
    request: Request,
    clients: int,
    duration: float,
    max_requests: int,
    warmup: int = 3,
) -> OpResult:
    """Run `request` from `clients` concurrent connections for at most `duration` s / `max_requests`."""
    run = _Run(request=request, warmup=warmup, max_requests=max_requests, result=OpResult(name, clients))
    sessions = [new_session(base_url, headers) for _ in range(clients)]
    try:
        tasks = [asyncio.create_task(_client_loop(s, i, run)) for i, s in enumerate(sessions)]
        # Every client finishes its warm-up before the clock starts.
        while run.warm < clients and not any(t.done() for t in tasks):
            await asyncio.sleep(0.005)
        t0 = time.perf_counter()
        run.deadline = t0 + duration
        run.start.set()
        await asyncio.gather(*tasks)
        run.result.elapsed = time.perf_counter() - t0
    finally:
        for s in sessions:
            await s.close()
    return run.result
