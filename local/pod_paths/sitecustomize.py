"""Local stack only (on PYTHONPATH of a local run Job, never in an image): the pod's ServiceAccount
directory, /var/run/secrets/kubernetes.io/serviceaccount, is a directory of the local stack here.

MLflow's `kubernetes` request-auth provider reads the token from that fixed path, a module constant no
argument or environment variable changes. Python imports this module at start-up (it is named
`sitecustomize` and its directory is on PYTHONPATH), so `mlflow run` and the entry point it starts both
read the token the local stack wrote, as a pod reads the one the kubelet wrote.
"""

import os

_DIRECTORY = os.environ.get("MLFLOW_AKS_LOCAL_SERVICE_ACCOUNT_DIR")

if _DIRECTORY:
    import importlib.abc
    import sys
    from pathlib import Path

    _PROVIDER = "mlflow.tracking.request_auth.kubernetes_request_auth_provider"

    class _PointAtLocalDirectory(importlib.abc.MetaPathFinder):
        """Repoint the provider's paths once it is imported; importing MLflow here would slow every start."""

        def find_spec(self, name, path=None, target=None):
            if name != _PROVIDER:
                return None
            sys.meta_path.remove(self)
            import importlib.util

            spec = importlib.util.find_spec(name)
            loader = spec.loader
            original = loader.exec_module

            def exec_module(module):
                original(module)
                module._SERVICE_ACCOUNT_TOKEN_PATH = Path(_DIRECTORY) / "token"
                module._SERVICE_ACCOUNT_NAMESPACE_PATH = Path(_DIRECTORY) / "namespace"

            loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _PointAtLocalDirectory())
