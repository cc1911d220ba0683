"""MLflow: where the store is, and one run per training stage.

Default store: ``sqlite:///<root>/mlflow.db`` with artifacts in ``<root>/mlartifacts/<experiment>``;
``MLFLOW_TRACKING_URI`` overrides it. ``<root>`` is ``DVC_ROOT`` when DVC runs the stage
(``dvc exp run`` works in a temporary copy that is deleted afterwards), else the project.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from transferlab.config import flatten, project_root

T = TypeVar("T")


def store_root() -> Path:
    return Path(os.environ["DVC_ROOT"]).resolve() if os.environ.get("DVC_ROOT") else project_root()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_root() / 'mlflow.db'}"


def artifact_location(experiment_name: str) -> str | None:
    """Artifacts beside the default sqlite store, a folder per experiment; a configured server decides itself."""
    return None if os.environ.get("MLFLOW_TRACKING_URI") else (store_root() / "mlartifacts" / experiment_name).as_uri()


def launched_as_global_zero() -> bool:
    """Whether this process is global rank 0, from the launcher's environment (before a Trainer exists).

    torchrun and SLURM set RANK / SLURM_PROCID; Lightning's own DDP launcher re-runs the
    stage command for each extra device with LOCAL_RANK (and NODE_RANK) set.
    """
    for variable in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if variable in os.environ:
            return int(os.environ[variable]) == 0
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


def with_retry(action: Callable[[], T], attempts: int = 8) -> T:
    """Retry an MLflow call that hit sqlite's "database is locked" (concurrent writers)."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as err:  # MLflow wraps sqlite errors in MlflowException
            if "locked" not in str(err).lower() or attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2**attempt)
    raise AssertionError("unreachable")


def client():
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri())


def experiment_id(mlflow_client, name: str) -> str:
    existing = with_retry(lambda: mlflow_client.get_experiment_by_name(name))
    if existing is not None:
        return existing.experiment_id
    try:
        return with_retry(lambda: mlflow_client.create_experiment(name, artifact_location=artifact_location(name)))
    except Exception:  # another process created it between the two calls
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def start_run(cfg, run_name: str, tags: dict[str, str]) -> str:
    """Create the stage's run with its tags and the flattened resolved config as params."""
    from mlflow.entities import Param

    mlflow_client = client()
    run = with_retry(lambda: mlflow_client.create_run(
        experiment_id(mlflow_client, cfg.tracking.experiment_name), run_name=run_name, tags=tags))
    params = [Param(key, str(value)) for key, value in sorted(flatten(cfg).items())]
    for start in range(0, len(params), 100):
        with_retry(lambda: mlflow_client.log_batch(run.info.run_id, params=params[start:start + 100]))
    return run.info.run_id


def write_run_file(path: Path, run_id: str) -> None:
    path.write_text(json.dumps({"run_id": run_id}, indent=2) + "\n")


def read_run_id(path: Path) -> str:
    return json.loads(path.read_text())["run_id"]


def log_metrics(run_id: str, metrics: dict[str, Any]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(key, float(value), now, 0) for key, value in metrics.items()]
    with_retry(lambda: client().log_batch(run_id, metrics=batch))


def log_artifact(run_id: str, path: Path, artifact_path: str | None = None) -> None:
    with_retry(lambda: client().log_artifact(run_id, str(path), artifact_path))
