"""MLflow runs: one parent run per pipeline execution, a run per trained model, nothing left RUNNING.

**Parent.** Every stage that DVC runs in one `dvc repro` (or `dvc exp run`) nests its runs
under the same parent run, although each stage is a separate process: the parent is found by
the identity of the DVC process they all descend from (tag ``pipeline_key``) and created by
the first stage that needs it. Each stage reopens it and closes it again when it ends
(FINISHED, or FAILED/KILLED with the stage), so it is never left RUNNING when DVC stops or
skips ``report``; ``report`` logs the verdict into it.

**Nothing left RUNNING.** Every run this process opens is closed when the stage ends,
whatever ends it (``core.stage.on_exit``): FAILED on an exception, KILLED on SIGTERM/SIGINT.
A process killed with SIGKILL cannot do that, so every run records the host, pid and pid
start time of its process (tags ``process.*``), and each stage starts by marking KILLED the
RUNNING runs of this host whose process is gone.

**Provenance** tags on every run: git commit (``mlflow.source.git.commit``) and
``git_dirty``, ``seed``, ``device``, library versions, the checksum of the prepared data
(``data.sha256``); the package list is an artifact. ``report`` adds the md5 of each DVC
stage's inputs as dvc.lock records them (``dvc.inputs_md5.<stage>``).
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
from collections.abc import Callable
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from transferlab.core import stage as stage_runner
from transferlab.core.config import project_root
from transferlab.core.paths import ProjectPaths
from transferlab.core.stage import launched_as_global_zero  # noqa: F401 (re-exported for the training code)
from transferlab.tracking.store import client, experiment_id, store_root, with_retry

TERMINAL = ("FINISHED", "FAILED", "KILLED")


# --------------------------------------------------------------------------- processes


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (Linux), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start(pid: int) -> str | None:
    fields = _proc_stat(pid)
    return fields[19] if fields else None  # field 22 of stat: start time in clock ticks


def process_tags() -> dict[str, str]:
    return {
        "process.host": socket.gethostname(),
        "process.pid": str(os.getpid()),
        "process.start": process_start(os.getpid()) or "",
    }


def process_alive(host: str, pid: str, start: str) -> bool:
    """Whether the process a run recorded still runs (the same pid *and* start time: pids are reused)."""
    if host != socket.gethostname():
        return True  # another machine's run: not ours to judge
    try:
        return process_start(int(pid)) == start
    except ValueError:
        return True


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
            return f"{socket.gethostname()}:{pid}:{fields[19]}"
        pid = int(fields[1])  # field 4: parent pid
    return None


# --------------------------------------------------------------------------- provenance


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(["git", *args], cwd=store_root(), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"cpu ({os.cpu_count()} cores)"


def provenance_tags(seed: Any) -> dict[str, str]:
    """Git commit and dirty flag (tracked files other than dvc.lock, which DVC rewrites as stages
    finish), seed, device and the versions of the main libraries."""
    return {"seed": str(seed), **_process_provenance()}


@lru_cache(maxsize=1)
def _process_provenance() -> dict[str, str]:
    """What is the same for every run of this process (a stage opens dozens: computed once)."""
    tags = {"device": device_name(), "python": platform.python_version()}
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


@lru_cache(maxsize=1)
def package_list() -> str:
    return "\n".join(sorted(f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions())) + "\n"


def data_tags(cfg, dataset: str) -> dict[str, str]:
    """The prepared dataset a run trains on: its name, source and a checksum of its arrays
    (sha256 over the card's per-file sha256s)."""
    from transferlab.core.artifacts import DatasetCard

    card_path = ProjectPaths.of(cfg).card(dataset)
    if not card_path.is_file():
        return {}
    card = DatasetCard.load(card_path)
    return {"data.name": dataset, "data.dataset": str(card.dataset or ""), "data.sha256": card.data_digest()}


# --------------------------------------------------------------------------- runs


def close_dead_runs(experiment: str) -> list[str]:
    """Mark KILLED every RUNNING run of this host whose process is gone (SIGKILL, power loss)."""
    mlflow_client = client()
    exp_id = experiment_id(experiment)
    running = with_retry(lambda: mlflow_client.search_runs([exp_id], "attributes.status = 'RUNNING'", max_results=1000))
    closed = []
    for run in running:
        tags = run.data.tags
        owner = tags.get("pipeline_key") if tags.get("stage") == "pipeline" else None
        if owner:  # a parent: alive while the dvc process that owns it is
            host, pid, start = (owner.split(":") + ["", "", ""])[:3]
        elif "process.pid" in tags:
            host, pid, start = tags.get("process.host", ""), tags["process.pid"], tags.get("process.start", "")
        else:
            continue
        if not process_alive(host, pid, start):
            with_retry(lambda: mlflow_client.set_terminated(run.info.run_id, "KILLED"))
            closed.append(run.info.run_id)
    if closed:
        print(f"MLflow: marked {len(closed)} run(s) KILLED whose process is gone")
    return closed


_open_runs: dict[str, Callable[[str], None]] = {}  # run id -> its clean-up callback, until the run is finished


def _close_on_exit(run_id: str) -> None:
    def close(status: str) -> None:
        _open_runs.pop(run_id, None)
        with_retry(lambda: client().set_terminated(run_id, status))

    _open_runs[run_id] = stage_runner.on_exit(close)


class Pipeline:
    """The stage's view of the pipeline's parent run (None when the stage runs by hand)."""

    def __init__(self, experiment: str, seed: Any):
        self.experiment = experiment
        self.key = pipeline_key()
        self.run_id: str | None = None
        if self.key is None:
            return
        mlflow_client = client()
        exp_id = experiment_id(experiment)
        found = with_retry(
            lambda: mlflow_client.search_runs([exp_id], f"tags.pipeline_key = '{self.key}'", max_results=1)
        )
        if found:
            self.run_id = found[0].info.run_id
            if found[0].info.status != "RUNNING":  # closed by the previous stage
                with_retry(lambda: mlflow_client.update_run(self.run_id, status="RUNNING"))
        else:
            tags = {"stage": "pipeline", "pipeline_key": self.key, **provenance_tags(seed)}
            run = with_retry(
                lambda: mlflow_client.create_run(
                    exp_id, run_name=f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')}", tags=tags
                )
            )
            self.run_id = run.info.run_id
        _close_on_exit(self.run_id)  # FINISHED when the stage succeeds: the next stage reopens it


def open_pipeline(cfg) -> Pipeline:
    """At the start of a stage (rank 0): close runs of dead processes, then open the parent run."""
    experiment = cfg.tracking.experiment_name
    close_dead_runs(experiment)
    return Pipeline(experiment, cfg.get("seed"))


def start_run(
    experiment: str,
    run_name: str,
    tags: dict[str, str],
    params: dict[str, Any],
    parent: str | None,
    seed: Any,
    artifacts: dict[str, Path] | None = None,
) -> str:
    """Create a run (nested under ``parent``), closed however the stage ends, with tags, provenance,
    params and the package list."""
    from mlflow.entities import Param

    mlflow_client = client()
    all_tags = {**provenance_tags(seed), **process_tags(), **tags, **({"mlflow.parentRunId": parent} if parent else {})}
    run = with_retry(lambda: mlflow_client.create_run(experiment_id(experiment), run_name=run_name, tags=all_tags))
    run_id = run.info.run_id
    _close_on_exit(run_id)
    batch = [Param(key, _param_value(value)) for key, value in sorted(params.items())]
    for start in range(0, len(batch), 100):
        with_retry(lambda: mlflow_client.log_batch(run_id, params=batch[start : start + 100]))
    with tempfile.TemporaryDirectory() as scratch:
        packages = Path(scratch) / "packages.txt"
        packages.write_text(package_list())
        log_artifact(run_id, packages, "environment")
    for artifact_path, path in (artifacts or {}).items():
        log_artifact(run_id, path, artifact_path or None)
    return run_id


def resume_run(run_id: str, parent: str | None) -> str:
    """Continue a run a killed process left: RUNNING again, this process's tags, this pipeline's parent."""
    mlflow_client = client()
    with_retry(lambda: mlflow_client.update_run(run_id, status="RUNNING"))
    for key, value in {
        **process_tags(),
        **({"mlflow.parentRunId": parent} if parent else {}),
        "resumed": "true",
    }.items():
        with_retry(lambda: mlflow_client.set_tag(run_id, key, value))
    _close_on_exit(run_id)
    return run_id


def finish_run(run_id: str, status: str = "FINISHED") -> None:
    """Close a run now (its duration ends here), instead of when the stage ends."""
    callback = _open_runs.pop(run_id, None)
    if callback is not None:
        stage_runner.forget(callback)
    with_retry(lambda: client().set_terminated(run_id, status))


def run_status(run_id: str) -> str | None:
    try:
        return with_retry(lambda: client().get_run(run_id)).info.status
    except Exception:  # deleted, or another store
        return None


def _param_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_param_value(v) for v in value) + "]"
    return str(value)


def log_metrics(run_id: str, metrics: dict[str, Any], step: int = 0) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [Metric(key, round(float(value), 6), now, step) for key, value in metrics.items()]
    with_retry(lambda: client().log_batch(run_id, metrics=batch))


def log_params(run_id: str, params: dict[str, Any]) -> None:
    """Params not logged yet (MLflow refuses to change a param's value)."""
    from mlflow.entities import Param

    existing = with_retry(lambda: client().get_run(run_id)).data.params
    batch = [Param(key, _param_value(value)) for key, value in sorted(params.items()) if key not in existing]
    for start in range(0, len(batch), 100):
        with_retry(lambda: client().log_batch(run_id, params=batch[start : start + 100]))


def set_tags(run_id: str, tags: dict[str, str]) -> None:
    from mlflow.entities import RunTag

    batch = [RunTag(key, str(value)) for key, value in tags.items()]
    with_retry(lambda: client().log_batch(run_id, tags=batch))


def log_artifact(run_id: str, path: Path, artifact_path: str | None = None) -> None:
    with_retry(lambda: client().log_artifact(run_id, str(path), artifact_path))


def find_runs(experiment: str, filter_string: str, max_results: int = 1000) -> list:
    return with_retry(
        lambda: client().search_runs(
            [experiment_id(experiment)], filter_string, max_results=max_results, order_by=["attributes.start_time DESC"]
        )
    )


# --------------------------------------------------------------------------- dvc.lock provenance


def inputs_md5(entry: dict) -> str:
    """md5 of a dvc.lock stage entry's inputs: its command, dependencies (with their hashes) and params."""
    inputs = {key: entry.get(key) for key in ("cmd", "deps", "params")}
    return hashlib.md5(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def tag_dvc_inputs(parent: str) -> None:
    """Tag the parent's child runs with the dvc.lock input hashes of the DVC stage that made them
    (tag ``dvc.stage`` on each run names it)."""
    import yaml

    lock_file = project_root() / "dvc.lock"
    if not lock_file.is_file():
        return
    lock = yaml.safe_load(lock_file.read_text()).get("stages", {})
    mlflow_client = client()
    experiment = with_retry(lambda: mlflow_client.get_run(parent)).info.experiment_id
    children = with_retry(
        lambda: mlflow_client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'", max_results=5000)
    )
    for run in children:
        stage = run.data.tags.get("dvc.stage")
        if stage in lock:
            with_retry(lambda: mlflow_client.set_tag(run.info.run_id, "dvc.inputs_md5", inputs_md5(lock[stage])))
