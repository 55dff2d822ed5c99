"""A Kubernetes API server of a few endpoints on loopback, for `helm template --dry-run=server`.

Helm's `lookup` function reads live objects during an install or upgrade, and returns nothing under a
plain `helm template`. To render a chart as Helm upgrades it, the tests point Helm at this server, which
answers discovery (the `apps/v1` Deployments only) and GETs of the objects a test puts in `objects`;
anything else is 404. It is plain HTTP: the kubeconfig it writes trusts no TLS at all.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_DEPLOYMENTS = {"name": "deployments", "singularName": "deployment", "namespaced": True, "kind": "Deployment",
                "verbs": ["get", "list"]}  # fmt: skip


class FakeKubeApi:
    def __init__(self) -> None:
        #: "/apis/apps/v1/namespaces/<ns>/deployments/<name>" -> the object
        self.objects: dict[str, dict] = {}
        self.requests: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?", 1)[0]
                api.requests.append(path)
                answer = api._answer(path)
                body = json.dumps(answer or {"kind": "Status", "status": "Failure", "code": 404}).encode()
                self.send_response(200 if answer else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _answer(self, path: str) -> dict | None:
        if path == "/version":
            return {"major": "1", "minor": "32", "gitVersion": "v1.32.0"}
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
        if path == "/apis":
            group = {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
                     "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}  # fmt: skip
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}
        if path == "/api/v1":
            return {"kind": "APIResourceList", "groupVersion": "v1", "resources": []}
        if path == "/apis/apps/v1":
            return {"kind": "APIResourceList", "groupVersion": "apps/v1", "resources": [_DEPLOYMENTS]}
        return self.objects.get(path)

    def kubeconfig(self, directory: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
            "current-context": "fake",
        }
        path = directory / "kubeconfig"
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return path

    def close(self) -> None:
        self.server.shutdown()
