from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Small enough that the whole pipeline runs in about two minutes on 2 cores.
TINY_PARAMS = {
    "data.source_train_per_class": 24, "data.small_train_per_class": 6, "data.large_train_per_class": 12,
    "data.val_per_class": 4, "data.test_per_class": 6, "pretrain.epochs": 1, "pretrain.batch_size": 32,
    "finetune.batch_size": 16, "evaluate.batch_size": 64,
    **{f"quadrants.{q}.epochs": 1 for q in ("small_similar", "small_different", "large_similar", "large_different")},
}


def tracked_files() -> list[str]:
    """Files of the project as git sees them (tracked or untracked-not-ignored)."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    return [f for f in listed if f and (REPO / f).is_file()]


def copy_project(dest: Path, params: dict | None = None) -> Path:
    """A copy of the project as a fresh git repository, with params.yaml edited."""
    from omegaconf import OmegaConf

    for rel in tracked_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    if params:
        cfg = OmegaConf.load(dest / "params.yaml")
        for key, value in params.items():
            OmegaConf.update(cfg, key, value, merge=True)
        OmegaConf.save(cfg, dest / "params.yaml")
    env = project_env()
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)
    return dest


def project_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_", "TRANSFERLAB_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def repo() -> Path:
    return REPO
