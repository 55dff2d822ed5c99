"""A tracking pod stops under load and no request fails (issue 18.5), on the real local stack.

Two servers as the chart renders them (the stack's own and a replica, same MariaDB and Azurite) behind one
address: a TCP balancer that behaves as a Service does through kube-proxy (each new connection goes to the
next endpoint; removing one changes where new connections go, established ones stay). Clients log metrics
non-stop, two on kept-alive connections and one on a new connection per request, while a 200 MB artifact
streams up through the replica. The replica then stops as Kubernetes stops a pod, with the numbers of the
rendered pod (drain, graceful shutdown, terminationGracePeriodSeconds): SIGTERM, its removal from the
endpoints reaching the balancer PROPAGATION_SECONDS later, the kill after the grace period. Every request
succeeds, every acknowledged metric is in the database, the artifact reads back byte for byte. The same
stop of a replica rendered without a drain fails requests, so the test would see a broken drain.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx

from local import LocalStack
from local.chart import ServerSpec
from local.procs import Proc, free_ports, stop

MIB = 1024 * 1024
UPLOAD_MIB = 200  # the size
UPLOAD_MIB_PER_SECOND = 25  # paced, so that the upload is still in flight when the stop begins and ends
# The replica's shutdown: short enough for a test, the relation the chart computes unchanged. The upload's
# pace is above the slowest rate assumed (a slower client may be cut, as on the cluster).
SHUTDOWN = {
    "drainSeconds": 3,
    "largestTransferMiB": UPLOAD_MIB,
    "minTransferMiBPerSecond": 5,
    "exitSeconds": 2,
}
# How long the endpoint's removal takes to reach the balancer (kube-proxy's lag), within the drain.
PROPAGATION_SECONDS = SHUTDOWN["drainSeconds"] / 2


class Balancer:
    """One address in front of several servers, as a ClusterIP Service through kube-proxy: round robin over
    the current endpoints per new TCP connection; established connections stay where they are."""

    def __init__(self, endpoints: list[int]):
        self.endpoints = list(endpoints)
        self.opened: list[int] = []  # the endpoint of each accepted connection, in order
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def remove(self, endpoint: int) -> None:
        with self._lock:
            self.endpoints.remove(endpoint)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                endpoint = self.endpoints[len(self.opened) % len(self.endpoints)]
                self.opened.append(endpoint)
                self._sockets.append(client)
            threading.Thread(target=self._connect, args=(client, endpoint), daemon=True).start()

    def _connect(self, client: socket.socket, endpoint: int) -> None:
        try:
            upstream = socket.create_connection(("127.0.0.1", endpoint), timeout=5)
        except OSError:  # nothing listens there any more: the client sees its connection close
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            self._sockets.append(upstream)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(256 * 1024):
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()


class MetricLoad(threading.Thread):
    """log_metric requests back to back, no retries: every failure counts. `kept_alive`: on one connection
    (a new one when the server closes it), as a run's client; else a new connection for each request, as
    the many short-lived clients (CLI calls, starting Jobs) whose connections a balancer spreads anew."""

    def __init__(self, url: str, auth: tuple[str, str], run_id: str, key: str, *, kept_alive: bool):
        super().__init__(daemon=True)
        self.url, self.auth, self.run_id, self.key = url, auth, run_id, key
        self.headers = {} if kept_alive else {"Connection": "close"}
        self.acknowledged: list[int] = []
        self.failures: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        transport = httpx.HTTPTransport(retries=0)
        with httpx.Client(
            base_url=self.url, auth=self.auth, headers=self.headers, timeout=30, transport=transport
        ) as client:
            step = 0
            while not self.done.is_set():
                metric = {"run_id": self.run_id, "key": self.key, "value": step, "timestamp": 0, "step": step}
                try:
                    answer = client.post("/api/2.0/mlflow/runs/log-metric", json=metric)
                    if answer.status_code == 200:
                        self.acknowledged.append(step)
                    else:
                        self.failures.append(f"step {step}: HTTP {answer.status_code} {answer.text[:200]}")
                except httpx.HTTPError as error:
                    self.failures.append(f"step {step}: {error!r}")
                step += 1


class Upload(threading.Thread):
    """One PUT of `mib` MiB through the server's artifact proxy at UPLOAD_MIB_PER_SECOND."""

    def __init__(self, url: str, auth: tuple[str, str], path: str, mib: int):
        super().__init__(daemon=True)
        self.url, self.auth, self.path, self.mib = url, auth, path, mib
        self.sent = 0
        self.digest = hashlib.sha256()
        self.outcome: str | None = None
        self.finished = 0.0  # time.monotonic() when the answer came (or the error)
        self.done = threading.Event()

    def _body(self) -> Iterator[bytes]:
        block = random.Random(18).randbytes(MIB)  # noqa: S311 - test data
        started = time.monotonic()
        for i in range(self.mib):
            chunk = i.to_bytes(8, "big") + block[8:]  # every MiB differs
            self.digest.update(chunk)
            self.sent += len(chunk)
            yield chunk
            time.sleep(max(0.0, started + (i + 1) / UPLOAD_MIB_PER_SECOND - time.monotonic()))

    def run(self) -> None:
        try:
            answer = httpx.put(
                f"{self.url}/api/2.0/mlflow-artifacts/artifacts/{self.path}",
                content=self._body(),
                headers={"Content-Length": str(self.mib * MIB)},
                auth=self.auth,
                timeout=60,
            )
            self.outcome = (
                "ok" if answer.status_code == 200 else f"HTTP {answer.status_code} {answer.text[:200]}"
            )
        except httpx.HTTPError as error:
            self.outcome = repr(error)
        finally:
            self.finished = time.monotonic()
            self.done.set()


def wait_for(what: str, check, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def stop_like_kubernetes(replica: Proc, balancer: Balancer, endpoint: int, grace: int) -> float:
    """SIGTERM to every process of the pod at once, the endpoint's removal reaching the balancer
    PROPAGATION_SECONDS later, SIGKILL after the grace period. Returns when the stop began."""
    removal = threading.Timer(PROPAGATION_SECONDS, balancer.remove, args=(endpoint,))
    started = time.monotonic()
    removal.start()
    stop(replica, timeout=grace, sig=signal.SIGTERM)
    removal.join()
    return started


@dataclass
class Replica:
    """Another pod of the tracking Deployment (LocalStack.replica_spec), started."""

    name: str
    port: int
    spec: ServerSpec
    proc: Proc | None = None


@contextlib.contextmanager
def replicas(stack: LocalStack, shutdowns: dict[str, dict]) -> Iterator[dict[str, Replica]]:
    """Replicas rendered with each `tracking.shutdown`, started together (as a rollout's surge pods start),
    stopped at the end whatever happened."""
    started = {
        name: Replica(name, port, stack.replica_spec(name, port, {"tracking": {"shutdown": shutdown}}))
        for (name, shutdown), port in zip(shutdowns.items(), free_ports(len(shutdowns)), strict=True)
    }
    errors: list[BaseException] = []

    def start(replica: Replica) -> None:
        try:
            replica.proc = stack.start_replica(replica.name, replica.spec)
        except BaseException as error:  # re-raised below
            errors.append(error)

    threads = [threading.Thread(target=start, args=(r,)) for r in started.values()]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        yield started
    finally:
        for replica in started.values():
            if replica.proc is not None:
                stop(replica.proc, timeout=10)


def scenario(stack: LocalStack, client, replica: Replica, *, upload_mib: int) -> dict:
    """Load the stack's server and `replica` behind one balancer (and upload `upload_mib` through the
    replica, if any), stop the replica as Kubernetes stops a pod; what the clients saw."""
    name, port, proc = replica.name, replica.port, replica.proc
    assert proc is not None
    grace = replica.spec.termination_grace_seconds
    assert grace is not None
    balancer = Balancer([port, stack.config.server_port])  # the first connection goes to the replica
    loads: list[MetricLoad] = []
    try:
        url = f"http://127.0.0.1:{balancer.port}"
        admin = stack.admin_credentials()
        run = client.create_run(client.get_experiment_by_name("Default").experiment_id, run_name=name)
        path = f"{run.info.experiment_id}/{run.info.run_id}/artifacts/{name}.bin"
        upload = Upload(url, admin, path, upload_mib)
        if upload_mib:
            upload.start()
            wait_for("the upload's connection", lambda: len(balancer.opened) >= 1, 10)
        # Round robin: one kept-alive client on each server, whether the upload took the first connection or
        # not; then the client that opens a connection per request.
        loads = [
            MetricLoad(url, admin, run.info.run_id, "kept-alive-1", kept_alive=True),
            MetricLoad(url, admin, run.info.run_id, "kept-alive-2", kept_alive=True),
            MetricLoad(url, admin, run.info.run_id, "new-connections", kept_alive=False),
        ]
        for load in loads:
            opened = len(balancer.opened)
            load.start()
            wait_for(f"{load.key}'s connection", lambda: len(balancer.opened) > opened, 10)  # noqa: B023
        assert balancer.opened.count(port) >= 2  # a kept-alive client (and maybe the upload) on the replica
        if upload_mib:
            wait_for(
                "a quarter of the upload",
                lambda: upload.sent >= upload_mib * MIB // 4 or upload.done.is_set(),
                60,
            )
        wait_for("every client's first answer", lambda: all(load.acknowledged for load in loads), 30)
        assert not [f for load in loads for f in load.failures]
        opened_before_stop = len(balancer.opened)
        stop_began = stop_like_kubernetes(proc, balancer, port, grace)
        took = time.monotonic() - stop_began
        time.sleep(0.5)  # the load goes on on the other server
        for load in loads:
            load.done.set()
        if upload_mib:
            upload.join(timeout=60)
        for load in loads:
            load.join(timeout=30)
        return {
            "run": run,
            "path": path,
            "upload": upload,
            "loads": loads,
            "url": url,
            "took": took,
            "grace": grace,
            "drain": float(replica.spec.main.env["MLFLOW_AKS_DRAIN_SECONDS"]),
            "upload_on_replica": balancer.opened[0] == port,
            "upload_after_sigterm": upload.finished - stop_began,
            "replica_connections_after_stop": balancer.opened[opened_before_stop:].count(port),
            "log": (stack.workdir / name / "server.log").read_text(errors="replace"),
        }
    finally:
        for load in loads:
            load.done.set()
        balancer.close()


def test_stopping_a_server_under_load_fails_no_request(stack, client, db):
    started = time.monotonic()
    with replicas(
        stack, {"drains": SHUTDOWN, "no-drain": {**SHUTDOWN, "drainSeconds": 0}}
    ) as started_replicas:
        print(f"two replicas ready in {time.monotonic() - started:.1f}s")
        seen = scenario(stack, client, started_replicas["drains"], upload_mib=UPLOAD_MIB)
        # The same stop of a server without the drain (no upload: the load's failures are the point, and
        # uvicorn would still wait for the upload).
        undrained = scenario(stack, client, started_replicas["no-drain"], upload_mib=0)
    loads: list[MetricLoad] = seen["loads"]
    print(
        f"stop took {seen['took']:.1f}s (grace {seen['grace']}s), the upload ended "
        f"{seen['upload_after_sigterm']:.1f}s after SIGTERM; "
        f"acknowledged {[len(load.acknowledged) for load in loads]}; new connections to the replica after "
        f"its SIGTERM {seen['replica_connections_after_stop']}"
    )
    # The scenario did what it says: the upload went to the stopping server (and load, see scenario), which
    # got new connections while its removal was on its way.
    assert seen["upload_on_replica"]
    assert seen["replica_connections_after_stop"] >= 1
    assert "Draining" in seen["log"]
    # No failed request.
    assert [f for load in loads for f in load.failures] == []
    assert seen["upload"].outcome == "ok"
    # The upload was still in flight when the replica stopped accepting (after the drain), and the replica
    # waited for it, then went by itself, before the kill.
    assert seen["upload_after_sigterm"] > seen["drain"]
    assert seen["upload_after_sigterm"] <= seen["took"] < seen["grace"]
    # Every acknowledged metric is stored.
    run_id = seen["run"].info.run_id
    for load in loads:
        with db.cursor() as cursor:
            cursor.execute("SELECT step FROM metrics WHERE run_uuid = %s AND `key` = %s", (run_id, load.key))
            stored = {row[0] for row in cursor.fetchall()}
        assert set(load.acknowledged) <= stored, sorted(set(load.acknowledged) - stored)[:10]
    # The artifact reads back intact, through the server that stayed.
    digest = hashlib.sha256()
    with httpx.stream(
        "GET",
        f"{seen['url']}/api/2.0/mlflow-artifacts/artifacts/{seen['path']}",
        auth=stack.admin_credentials(),
        timeout=60,
    ) as answer:
        assert answer.status_code == 200
        for chunk in answer.iter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == seen["upload"].digest.hexdigest()

    # Without the drain, the same stop fails requests: the test sees a missing drain.
    failures = [f for load in undrained["loads"] for f in load.failures]
    print(
        f"without a drain: {len(failures)} failed requests, e.g. {failures[:2]}; "
        f"upload {undrained['upload'].outcome}"
    )
    assert failures
