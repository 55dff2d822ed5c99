"""`python /app/collect_garbage.py --older-than 30d`: MLflow's `mlflow gc` with the server's own settings.

It deletes for good the runs and experiments that were deleted in the UI more than `--older-than` ago,
with their metadata and their artifacts in the artifact store. The chart's gc CronJob runs it with the
tracking server's environment and identity:

- MLFLOW_BACKEND_STORE_URI: the database. It is passed to `mlflow gc` in this process, never on a
  command line where the password would show.
- MLFLOW_AKS_ARTIFACTS_DESTINATION: the server's `--artifacts-destination`. The runs' artifact locations
  are `mlflow-artifacts:/<path>`, which `mlflow gc` alone would delete through a running server (with
  an admin's credentials). Here they resolve as the server resolves them, to `<destination>/<path>` in
  the blob container, deleted with the pod's workload identity: no server, no password.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--older-than", required=True, help="e.g. 30d, 12h, 1d2h (mlflow gc's format)")
    args = parser.parse_args(argv)
    backend = os.environ.get("MLFLOW_BACKEND_STORE_URI")
    destination = os.environ.get("MLFLOW_AKS_ARTIFACTS_DESTINATION")
    if not backend or not destination:
        print(
            "collect_garbage.py: MLFLOW_BACKEND_STORE_URI and MLFLOW_AKS_ARTIFACTS_DESTINATION are needed",
            file=sys.stderr,
        )
        return 2
    import mlflow.cli

    resolve = mlflow.cli.get_artifact_repository

    def artifact_repository(uri: str, *rest, **options):
        if uri.startswith("mlflow-artifacts:"):
            uri = destination.rstrip("/") + "/" + urllib.parse.urlparse(uri).path.lstrip("/")
        return resolve(uri, *rest, **options)

    mlflow.cli.get_artifact_repository = artifact_repository
    mlflow.set_tracking_uri(backend)  # `mlflow gc` insists on one; everything it does goes to the database
    gc = ["gc", "--backend-store-uri", backend, "--artifacts-destination", destination]
    try:
        mlflow.cli.cli([*gc, "--older-than", args.older_than], prog_name="mlflow", standalone_mode=False)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
