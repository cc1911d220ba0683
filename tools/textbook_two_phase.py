"""The textbook's transfer recipe on one quadrant, reported on its own (docs/imagenet.md).

    python tools/textbook_two_phase.py <workspace> [--quadrant large_similar] [--lr 0.003]
        [--epochs 6] [--head-epochs 2] [--steps 240] [--seeds 0]

The textbook (an ImageNet network, the 5-class flower photos) trains only a new head on the frozen
pretrained network, reports validation accuracy, then unfreezes the network at a 10x smaller learning
rate and reports test accuracy. Here that is one finetune_all cell with the `two_phase` recipe of
conf/regime/finetune_all.yaml (phase 1: the head alone for ``--head-epochs`` validated epochs; phase 2:
every stage at ``backbone_lr_factor`` = 0.1 of the head's rate), run by the pipeline's own cell runner,
in ``<workspace>`` where `dvc repro pretrain` has finished (its data, image size and network: the
report's source). Printed per seed: the best validation accuracy of phase 1 (the head alone), the best of
phase 2, and the test accuracy of the best-validation checkpoint, which is a phase-2 one when phase 2
helped. The cells' state goes to the workspace's resumable state folder (ProjectPaths.state), their runs to the
workspace's MLflow experiment. This is a report, not the comparison: no regime is chosen from it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def phase_accuracies(val_by_epoch: list[float], head_epochs: int) -> tuple[float, float]:
    """(best validation accuracy of phase 1, best of phase 2) from a two-phase run's per-epoch history."""
    if not 0 < head_epochs < len(val_by_epoch):
        raise ValueError(f"head_epochs={head_epochs} needs 1..{len(val_by_epoch) - 1} for {len(val_by_epoch)} epochs")
    return max(val_by_epoch[:head_epochs]), max(val_by_epoch[head_epochs:])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--quadrant", default="large_similar")
    parser.add_argument("--lr", type=float, default=0.003, help="the head's rate; the backbone's is 1/10 of it")
    parser.add_argument("--epochs", type=int, default=6, help="validated epochs in all")
    parser.add_argument("--head-epochs", type=int, default=2, help="phase 1: the head alone")
    parser.add_argument("--steps", type=int, default=240, help="optimizer steps in all")
    parser.add_argument("--seeds", default="0", help="comma-separated")
    args = parser.parse_args(argv)
    if not 0 < args.head_epochs < args.epochs:
        parser.error(f"--head-epochs {args.head_epochs}: allowed 1..{args.epochs - 1} (--epochs {args.epochs})")
    seeds = [int(s) for s in args.seeds.split(",")]

    os.chdir(args.workspace)  # the stages' paths are the project root's (ProjectPaths)
    from transferlab.core.config import load_config
    from transferlab.core.paths import ProjectPaths
    from transferlab.tracking.runs import open_pipeline
    from transferlab.training.runner import CellRunner, CellSpec

    cfg = load_config("finetune", ["regime=finetune_all", f"finetune.epochs={args.epochs}"])
    where = ProjectPaths.of(cfg)
    parent = open_pipeline(cfg).run_id
    runner = CellRunner(cfg, where.state("textbook"), parent)
    print(f"{cfg.model.name} at {cfg.data.image_size} px, batch {cfg.finetune.batch_size}, {args.steps} steps")
    for seed in seeds:
        spec = CellSpec.for_regime(
            cfg,
            "finetune_all",
            args.quadrant,
            seed,
            args.steps,
            stage="textbook",
            dvc_stage="textbook",
            label=f"lr={args.lr:g},two_phase",
            lr=args.lr,
            head_epochs=args.head_epochs,
            plateau_patience=None,
            backbone_lr_factor=0.1,
        )
        record = runner.run(spec).record
        head_alone, unfrozen = phase_accuracies(record.val_by_epoch or [], args.head_epochs)
        test = record.test.acc if record.test else float("nan")
        print(
            f"{args.quadrant} seed {seed}: validation {head_alone:.3f} with the head alone (epochs 1-"
            f"{args.head_epochs}), {unfrozen:.3f} after unfreezing; test {test:.3f} at the best validation "
            f"epoch ({record.best_epoch} of {record.epochs}, phase {1 if record.best_epoch <= args.head_epochs else 2})"
        )


if __name__ == "__main__":
    from transferlab.core.stage import run_stage

    run_stage("textbook", main)  # one-line errors; every MLflow run it opens is closed, however it ends
