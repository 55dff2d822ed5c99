"""Entry point of the tracking-server container: `python /app/serve.py <mlflow server arguments>`.

The chart's Deployment and the local stack both start the server through this file with the same
arguments, so whatever the server needs beyond `mlflow server` lives here, in one place.
"""

import sys

from mlflow.cli import cli

if __name__ == "__main__":
    sys.exit(cli(["server", *sys.argv[1:]]))
