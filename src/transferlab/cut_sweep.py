"""Stage `cut_sweep@<quadrant>-<cut_at>-<seed>`: one point of truncate_freeze's cut-point sweep.

Keeps the pretrained stages up to and including ``cut_at``, frozen, trains a new head with
the matrix budget (see regime_matrix.py) and tests it. Swept over every stage of the model
for a similar and a different target, this is the layer-transferability curve of Yosinski
et al. (2014): how far up the pretrained features stay useful. Result:
reports/matrix/cuts/<quadrant>-<cut_at>-s<seed>.json.
"""

from __future__ import annotations

from transferlab.cli import run_stage
from transferlab.config import ConfigError, load_config, paths
from transferlab.regime_matrix import run_cell

CUTS = "matrix/cuts"  # under reports/


def cut_name(quadrant: str, cut_at: str, seed: int) -> str:
    return f"{quadrant}-{cut_at}-s{seed}"


def main(argv: list[str]) -> None:
    cut_at = next((arg.split("=", 1)[1] for arg in argv if arg.startswith("cut_at=")), None)
    if cut_at is None:
        raise ConfigError("cut_sweep needs cut_at=<stage name of the model>")
    rest = [arg for arg in argv if not arg.startswith("cut_at=")]
    quadrant = next((arg.split("=", 1)[1] for arg in rest if arg.startswith("quadrant=")), None)
    cfg = load_config("cut_sweep", [*rest, "regime=truncate_freeze", f"quadrants.{quadrant}.cut_at={cut_at}"])
    out_file = paths(cfg)["reports"] / CUTS / f"{cut_name(cfg.quadrant, cut_at, cfg.seed)}.json"
    run_cell(cfg, out_file, "cut_sweep")


if __name__ == "__main__":
    run_stage("cut_sweep", main)
