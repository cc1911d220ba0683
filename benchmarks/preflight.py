"""How fast a stage run by hand stops on bad input: wall time from `python -m transferlab.<stage> ...` to its
one-line error, for typical mistakes (goal: within 3 s on an idle 2-core machine, before torch, Lightning
and MLflow are imported). Runs in a copy of the project with no data, so any work would fail later
instead of earlier. Each case runs 3 times; the median is shown, with a control: the time to import
the stage's heavy libraries, which a late check would add.

Usage: python benchmarks/preflight.py
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
CASES = [
    ("finetune", ["regime=scratch", "data.val_per_clas=10"], "a typo in a key"),
    ("finetune", ["regime=scratch", "regime.finetune_all.head_epochs=abc"], "a value of the wrong type"),
    ("finetune", ["regime=magic"], "an unknown regime"),
    ("finetune", ["regime=scratch", "regime.truncate_freeze.cut_at=stage9"], "a cut point the model lacks"),
    ("pretrain", ["pretrain.epochs=0"], "a value out of range"),
    ("evaluate", [], "a missing input (no finetune results)"),
    ("finetune", ["regime=scratch"], "a tracking server that does not answer"),
]


def timed(project: Path, stage: str, argv: list[str], env: dict) -> tuple[float, int, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", f"transferlab.{stage}", *argv], cwd=project, env=env, capture_output=True, text=True
    )
    return time.perf_counter() - started, done.returncode, (done.stderr.strip().splitlines() or [""])[-1]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="transferlab-preflight-") as tmp:
        project = Path(tmp) / "project"
        project.mkdir()
        shutil.copy(REPO / "params.yaml", project / "params.yaml")
        shutil.copytree(REPO / "conf", project / "conf")
        base = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
        table = Table(title="bad input: seconds to the one-line error (median of 3)")
        for column in ("stage", "input", "exit", "seconds", "error"):
            table.add_column(column, justify="right" if column in ("exit", "seconds") else "left")
        for stage, argv, what in CASES:
            env = dict(base)
            if "server" in what:  # inputs in place (empty cards), so the store is the first thing that fails
                env["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:9"
                for dataset in ("small_similar", "small_different", "large_similar", "large_different"):
                    for folder, name in (("data/raw", "card.json"), ("data/augmented", "meta.json")):
                        (project / folder / dataset).mkdir(parents=True, exist_ok=True)
                        (project / folder / dataset / name).write_text("{}")
            runs = [timed(project, stage, argv, env) for _ in range(3)]
            seconds, code, line = statistics.median(r[0] for r in runs), runs[-1][1], runs[-1][2]
            table.add_row(stage, what, str(code), f"{seconds:.2f}", line[:90])
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import torch, lightning, mlflow, albumentations"], check=True)
        control = time.perf_counter() - started
    console = Console()
    console.print(table)
    console.print(f"control: importing torch, lightning, mlflow, albumentations takes {control:.2f} s here")


if __name__ == "__main__":
    main()
