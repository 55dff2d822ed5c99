"""The local stack: MariaDB, Azurite and the MLflow tracking server as charts/mlflow_setup renders it.

`python -m local up|down|status|credentials|run-project`; Python API in `local.stack`.
"""

from local.procs import StackError, free_port, free_ports
from local.stack import LocalStack, RunResult, StackConfig, missing_prerequisites

__all__ = [
    "LocalStack",
    "RunResult",
    "StackConfig",
    "StackError",
    "free_port",
    "free_ports",
    "missing_prerequisites",
]
