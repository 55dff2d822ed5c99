"""Entry of each server-side job's process in the jobs pod: `python -m job_entry` (jobs.py points MLflow's
runner here instead of `python -m mlflow.server.jobs._job_subproc_entry`).

MLflow gives its jobs the database as tracking URI (mlflow/server/jobs/_executor_runner.py,
_build_execution_context), so a run's `mlflow-artifacts:` location cannot be resolved there: issue
detection's report (summary.md, issues.json, metadata.json) was never saved to its run. Here serve.py's
change 16 is installed first, so such a URI opens the serving pods' artifacts destination (the chart gives
this pod the destination and the same identity), then MLflow's own entry runs, unchanged.
"""

from __future__ import annotations

import runpy

MLFLOW_JOB_ENTRY = "mlflow.server.jobs._job_subproc_entry"


def main() -> None:
    import serve  # beside this file (/app in the image)

    serve.resolve_proxied_artifacts_in_process()
    runpy.run_module(MLFLOW_JOB_ENTRY, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
