"""`python -m transferlab.sweep -m ...`: Hydra multirun over comparison cells, locally or on SLURM.

Outside DVC: for sweeps larger than the DVC pipeline is good for (many seeds, learning rates,
models), run as SLURM jobs by Hydra's submitit launcher. Each job trains one (quadrant,
regime, seed) cell exactly as the `finetune@<regime>` stage does (same budget, tested on the
quadrant's test split), tracked in MLflow with tag stage=sweep, and writes cell.json into its
own Hydra folder (multirun/<time>/<job number>/), so parallel jobs never share an output. The
job's Hydra overrides become the stage's arguments (`+key=value` -> `key=value`; `seed=N`
trains seed N).
"""

from __future__ import annotations

import sys
from pathlib import Path

from transferlab.core.config import project_root
from transferlab.core.errors import ConfigError

CONFIG_DIR = "sweep"  # conf/sweep/: the primary config and the launcher configs


def job_arguments(task_overrides: list[str]) -> list[str]:
    """The stage arguments of one job: its overrides without Hydra's `+` / `++` prefixes; seed=N -> seeds=[N]."""
    arguments = []
    for override in task_overrides:
        key, _, value = override.lstrip("+").partition("=")
        arguments.append(f"seeds=[{value}]" if key == "seed" else f"{key}={value}")
    return arguments


def run_job(cfg) -> float:
    from hydra.core.hydra_config import HydraConfig

    from transferlab.core.config import load_config
    from transferlab.core.files import write_json
    from transferlab.tracking.runs import open_pipeline
    from transferlab.training.runner import CellRunner, CellSpec, headline_budget

    hydra_cfg = HydraConfig.get()
    arguments = job_arguments(list(hydra_cfg.overrides.task))
    if not any(a.startswith("seeds=") for a in arguments):  # the sweep config's default seed
        arguments.append(f"seeds=[{cfg.seed}]")
    stage_cfg = load_config("sweep", arguments)
    quadrant, regime = stage_cfg.args.quadrant, stage_cfg.args.regime
    out_dir = Path(hydra_cfg.runtime.output_dir)
    [seed] = stage_cfg.seeds
    runner = CellRunner(stage_cfg, out_dir / "state", open_pipeline(stage_cfg).run_id)
    spec = CellSpec.for_regime(stage_cfg, regime, quadrant, seed, headline_budget(stage_cfg), stage="sweep")
    record = runner.run(spec).record
    write_json(out_dir / "cell.json", {"quadrant": quadrant, "regime": regime, **record.model_dump(mode="json")})
    return record.val_acc  # what a Hydra sweeper would optimise: validation, never test


def main() -> None:
    import hydra

    try:
        config_dir = project_root() / "conf" / CONFIG_DIR
    except ConfigError as err:
        sys.exit(f"error: {err}")
    hydra.main(version_base="1.3", config_path=str(config_dir), config_name="sweep")(run_job)()


if __name__ == "__main__":
    main()
