"""MLflow: where the store is, one run per training stage, and one parent run per pipeline execution.

Every stage that DVC runs in one `dvc repro` (or one `dvc exp run`) nests its run under the
same parent run, although each stage is a separate process: the parent is found by the
identity of the DVC process they all descend from (tag ``pipeline_key``), and created by the
first stage that needs it. ``report`` logs the summary to it and marks it finished. Runs carry
provenance tags: git commit (``mlflow.source.git.commit``) and ``git_dirty``, ``seed``,
``device``, library versions, the checksum of the prepared data (``data.sha256``, from the
dataset card); the full package list is an artifact. When the pipeline finishes, ``report``
tags every child run with the md5 of its DVC stages' inputs as recorded in dvc.lock
(``dvc.inputs_md5.<stage>``; dvc.lock is written after each stage, so only then are they known).

Default store: ``sqlite:///<root>/mlflow.db`` with artifacts in ``<root>/mlartifacts/<experiment>``;
``MLFLOW_TRACKING_URI`` overrides it. ``<root>`` is ``DVC_ROOT`` when DVC runs the stage
(``dvc exp run`` works in a temporary copy that is deleted afterwards), else the project.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, TypeVar

from transferlab.config import flatten, paths, project_root

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


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (Linux), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _is_dvc(pid: int) -> bool:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:3]
    except OSError:
        return False
    return any(Path(arg.decode(errors="replace")).name == "dvc" for arg in args)


def pipeline_key() -> str | None:
    """The identity of the pipeline execution this stage belongs to, or None (a stage run by hand).

    ``TRANSFERLAB_PIPELINE_ID`` when set; else, under DVC, the nearest ``dvc`` ancestor process
    (host, pid and start time: unique even when pids are reused).
    """
    explicit = os.environ.get("TRANSFERLAB_PIPELINE_ID")
    if explicit:
        return explicit
    if not os.environ.get("DVC_ROOT"):
        return None
    pid = os.getppid()
    for _ in range(10):
        fields = _proc_stat(pid)
        if fields is None or pid <= 1:
            return None
        if _is_dvc(pid):
            return f"{socket.gethostname()}:{pid}:{fields[19]}"  # field 22 of stat: start time
        pid = int(fields[1])  # field 4: parent pid
    return None


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=store_root(), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def provenance_tags(seed: Any) -> dict[str, str]:
    """Git commit and dirty flag (tracked files other than dvc.lock, which DVC rewrites as stages
    finish), seed, device and the versions of the main libraries."""
    tags = {"seed": str(seed), "device": device_name(), "python": platform.python_version()}
    commit = _git("rev-parse", "HEAD")
    if commit:
        changed = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)dvc.lock")
        tags.update({"mlflow.source.git.commit": commit, "git_dirty": str(bool(changed)).lower()})
    for package in ("torch", "torchvision", "lightning", "mlflow", "dvc", "hydra-core"):
        try:
            tags[f"version.{package}"] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return tags


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"cpu ({os.cpu_count()} cores)"


def package_list() -> str:
    return "\n".join(sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions())) + "\n"


def _find_parent(mlflow_client, exp_id: str, key: str):
    found = with_retry(lambda: mlflow_client.search_runs([exp_id], f"tags.pipeline_key = '{key}'", max_results=1))
    return found[0] if found else None


def close_parent(experiment: str) -> None:
    """Mark the pipeline's parent run FINISHED at the end of a training stage. The next stage
    reopens it and `report` closes it for good; without this, a pipeline whose `report` DVC
    skips (its inputs did not change) would leave its parent RUNNING forever."""
    key = pipeline_key()
    if key is None:
        return
    mlflow_client = client()
    found = _find_parent(mlflow_client, experiment_id(mlflow_client, experiment), key)
    if found is not None:
        with_retry(lambda: mlflow_client.set_terminated(found.info.run_id, "FINISHED"))


def parent_run_id(mlflow_client, experiment: str, seed: Any) -> str | None:
    """The pipeline execution's parent run (created by the first stage that asks), or None."""
    key = pipeline_key()
    if key is None:
        return None
    exp_id = experiment_id(mlflow_client, experiment)
    found = _find_parent(mlflow_client, exp_id, key)
    if found is not None:
        if found.info.status != "RUNNING":  # closed by the previous stage (see close_parent)
            with_retry(lambda: mlflow_client.update_run(found.info.run_id, status="RUNNING"))
        return found.info.run_id
    tags = {"stage": "pipeline", "pipeline_key": key, **provenance_tags(seed)}
    run = with_retry(lambda: mlflow_client.create_run(
        exp_id, run_name=f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')}", tags=tags))
    return run.info.run_id


def data_tags(cfg) -> dict[str, str]:
    """The prepared dataset a stage trains on: its name, source and a checksum of its arrays
    (sha256 over the card's per-file sha256s)."""
    dataset = cfg.get("quadrant") or "source"
    card_path = paths(cfg)["raw"] / dataset / "card.json"
    if not card_path.is_file():
        return {}
    card = json.loads(card_path.read_text())
    digest = hashlib.sha256(json.dumps(card["sha256"], sort_keys=True).encode()).hexdigest()
    return {"data.name": dataset, "data.dataset": str(card["source"].get("dataset", "")), "data.sha256": digest}


def dvc_stages(tags: dict[str, str]) -> list[str]:
    """The DVC stage names that logged into a run with these tags (evaluate logs into finetune's run)."""
    stage, quadrant = tags.get("stage"), tags.get("quadrant")
    if stage == "pretrain":
        return ["pretrain"]
    if stage == "finetune":
        return [f"finetune@{quadrant}", f"evaluate@{quadrant}"]
    if stage == "regime_matrix":
        return [f"regime_matrix@{quadrant}-{tags.get('regime')}-{tags.get('seed')}"]
    if stage == "cut_sweep":
        return [f"cut_sweep@{quadrant}-{tags.get('cut_at')}-{tags.get('seed')}"]
    return []


def inputs_md5(entry: dict) -> str:
    """md5 of a dvc.lock stage entry's inputs: its command, dependencies (with their hashes) and params."""
    inputs = {key: entry.get(key) for key in ("cmd", "deps", "params")}
    return hashlib.md5(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def tag_dvc_inputs(mlflow_client, parent: str) -> None:
    """Tag the parent's child runs with the dvc.lock input hashes of the stages that made them."""
    import yaml

    lock_file = project_root() / "dvc.lock"
    if not lock_file.is_file():
        return
    lock = yaml.safe_load(lock_file.read_text()).get("stages", {})
    experiment = with_retry(lambda: mlflow_client.get_run(parent)).info.experiment_id
    children = with_retry(lambda: mlflow_client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'"))
    for run in children:
        for stage in dvc_stages(run.data.tags):
            if stage in lock:
                key = f"dvc.inputs_md5.{stage.split('@')[0]}"
                with_retry(lambda: mlflow_client.set_tag(run.info.run_id, key, inputs_md5(lock[stage])))


def start_run(cfg, run_name: str, tags: dict[str, str]) -> str:
    """Create the stage's run (nested under the pipeline's parent run when there is one) with its
    tags, provenance, the flattened resolved config as params and the package list."""
    from mlflow.entities import Param

    mlflow_client = client()
    experiment = cfg.tracking.experiment_name
    parent = parent_run_id(mlflow_client, experiment, cfg.get("seed"))
    all_tags = {**provenance_tags(cfg.get("seed")), **data_tags(cfg), **tags,
                **({"mlflow.parentRunId": parent} if parent else {})}
    run = with_retry(lambda: mlflow_client.create_run(experiment_id(mlflow_client, experiment), run_name=run_name,
                                                      tags=all_tags))
    params = [Param(key, str(value)) for key, value in sorted(flatten(cfg).items())]
    for start in range(0, len(params), 100):
        with_retry(lambda: mlflow_client.log_batch(run.info.run_id, params=params[start:start + 100]))
    with tempfile.TemporaryDirectory() as scratch:
        packages = Path(scratch) / "packages.txt"
        packages.write_text(package_list())
        log_artifact(run.info.run_id, packages, "environment")
    return run.info.run_id


def finish_pipeline(experiment: str, seed: Any, files: list[Path]) -> str | None:
    """Log the report's files to the pipeline's parent run and mark it finished (the last stage)."""
    mlflow_client = client()
    parent = parent_run_id(mlflow_client, experiment, seed)
    if parent is None:
        return None
    for path in files:
        log_artifact(parent, path, "report")
    tag_dvc_inputs(mlflow_client, parent)
    with_retry(lambda: mlflow_client.set_terminated(parent, "FINISHED"))
    return parent


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
