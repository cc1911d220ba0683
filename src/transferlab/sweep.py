"""`python -m transferlab.sweep -m ...`: Hydra multirun over matrix cells, locally or on SLURM.

Outside DVC: for sweeps larger than a DVC matrix is good for (many seeds, learning rates,
models), run as SLURM jobs by Hydra's submitit launcher. Each job is one cell of the regime
matrix (regime_matrix.run_cell: train with the matrix budget, test the best checkpoint),
tracked in MLflow with tag stage=sweep, and writes cell.json into its own Hydra folder
(multirun/<time>/<job number>/), so parallel jobs never share an output. The job's Hydra
overrides become the stage's command-line arguments (`+key=value` -> `key=value`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from transferlab.config import ConfigError, load_config, project_root
from transferlab.regime_matrix import run_cell

CONFIG_DIR = "sweep"  # conf/sweep/: the primary config and the launcher configs


def job_arguments(task_overrides: list[str]) -> list[str]:
    """The stage arguments of one job: its overrides without Hydra's `+` / `++` prefixes."""
    return [override.lstrip("+") for override in task_overrides]


def run_job(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    stage_cfg = load_config("regime_matrix", job_arguments(list(hydra_cfg.overrides.task)))
    result = run_cell(stage_cfg, Path(hydra_cfg.runtime.output_dir) / "cell.json", "sweep")
    return result["test"]["acc"]  # what a Hydra sweeper would optimise


def main() -> None:
    try:
        config_dir = project_root() / "conf" / CONFIG_DIR
    except ConfigError as err:
        sys.exit(f"error: {err}")
    hydra.main(version_base="1.3", config_path=str(config_dir), config_name="sweep")(run_job)()


if __name__ == "__main__":
    main()
