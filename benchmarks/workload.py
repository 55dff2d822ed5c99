"""The measured MLflow REST calls, as a training loop and a user of the UI make them.

Every call goes through the public REST API with basic-auth, exactly as MlflowClient sends it
(`/api/2.0/mlflow/...` JSON bodies; artifacts through the `mlflow-artifacts` proxy).
"""

from __future__ import annotations

import time
import uuid

import aiohttp

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
ONE_MIB = b"\xa5" * (1024 * 1024)
SEARCH_RUNS = 50  # runs in the experiment that search_runs reads (one page)


async def seed_search_experiment(session: aiohttp.ClientSession, runs: int = SEARCH_RUNS) -> str:
    """An experiment of `runs` finished-looking training runs (params, metrics, a tag); its id.

    Created once per benchmark and only read afterwards, so every variant searches the same data.
    """
    now = int(time.time() * 1000)
    exp = await _post(session, f"{API}/experiments/create", {"name": f"bench-search-{uuid.uuid4().hex[:8]}"})
    experiment_id = exp["experiment_id"]
    for i in range(runs):
        run = await _post(
            session,
            f"{API}/runs/create",
            {"experiment_id": experiment_id, "start_time": now + i, "run_name": f"train-{i}"},
        )
        await _post(
            session,
            f"{API}/runs/log-batch",
            {
                "run_id": run["run"]["info"]["run_id"],
                "params": [{"key": f"p{k}", "value": str(i * k)} for k in range(6)],
                "metrics": [
                    {"key": m, "value": (i % 10) / 10 + k / 100, "timestamp": now, "step": 0}
                    for k, m in enumerate(("accuracy", "f1", "roc_auc", "log_loss"))
                ],
                "tags": [{"key": "mlflow.source.type", "value": "PROJECT"}],
            },
        )
    return experiment_id


async def _post(session: aiohttp.ClientSession, path: str, body: dict) -> dict:
    async with session.post(path, json=body) as resp:
        data = await resp.json(content_type=None)
        if resp.status != 200:
            raise RuntimeError(f"POST {path} -> {resp.status}: {data}")
        return data


class Workload:
    """One run per client for one server under test, and the request functions the load uses."""

    def __init__(self, label: str, max_clients: int, search_experiment_id: str, search_runs: int):
        self.label = label
        self.max_clients = max_clients
        self.search_experiment_id = search_experiment_id
        self.search_page = search_runs
        self.experiment_id = ""
        self.run_ids: list[str] = []
        self._step = 0

    async def setup(self, session: aiohttp.ClientSession) -> None:
        name = f"bench-{self.label}-{uuid.uuid4().hex[:8]}"
        exp = await _post(session, f"{API}/experiments/create", {"name": name})
        self.experiment_id = exp["experiment_id"]
        now = int(time.time() * 1000)
        for i in range(self.max_clients):
            run = await _post(
                session,
                f"{API}/runs/create",
                {"experiment_id": self.experiment_id, "start_time": now, "run_name": f"client-{i}"},
            )
            self.run_ids.append(run["run"]["info"]["run_id"])

    def _next_step(self) -> int:
        self._step += 1
        return self._step

    async def log_metric(self, session: aiohttp.ClientSession, client: int, seq: int) -> bool:
        body = {
            "run_id": self.run_ids[client],
            "key": "loss",
            "value": 1.0 / (abs(seq) + 2),
            "timestamp": int(time.time() * 1000),
            "step": self._next_step(),
        }
        async with session.post(f"{API}/runs/log-metric", json=body) as resp:
            await resp.read()
            return resp.status == 200

    async def log_batch(self, session: aiohttp.ClientSession, client: int, seq: int) -> bool:
        step = self._next_step()
        ts = int(time.time() * 1000)
        body = {
            "run_id": self.run_ids[client],
            "metrics": [
                {"key": f"m{k}", "value": k + seq / 1000, "timestamp": ts, "step": step} for k in range(100)
            ],
        }
        async with session.post(f"{API}/runs/log-batch", json=body) as resp:
            await resp.read()
            return resp.status == 200

    async def search_runs(self, session: aiohttp.ClientSession, client: int, seq: int) -> bool:
        body = {
            "experiment_ids": [self.search_experiment_id],
            "max_results": self.search_page,
            "order_by": ["attributes.start_time DESC"],
        }
        async with session.post(f"{API}/runs/search", json=body) as resp:
            data = await resp.json(content_type=None)
            return resp.status == 200 and len(data.get("runs", [])) == self.search_page

    async def upload_1mib(self, session: aiohttp.ClientSession, client: int, seq: int) -> bool:
        run_id = self.run_ids[client]
        path = f"{ARTIFACTS}/{self.experiment_id}/{run_id}/artifacts/bench/{client}-{self._next_step()}.bin"
        async with session.put(
            path, data=ONE_MIB, headers={"Content-Type": "application/octet-stream"}
        ) as resp:
            await resp.read()
            return resp.status == 200
