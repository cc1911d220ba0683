"""Time and peak memory of every pipeline stage under `dvc repro`, default params.

Copies the project (git-tracked files) into a temporary directory, runs `dvc repro` there
with TRANSFERLAB_PROFILE set (each stage appends its wall time and peak RSS), and prints
a table with each stage's share of the total. `key=value` arguments edit params.yaml of
the copy first. Usage: python benchmarks/pipeline_stages.py [key=value ...]
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]


def copy_project(dest: Path, overrides: list[str]) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    params = OmegaConf.load(dest / "params.yaml")
    for item in overrides:
        key, _, value = item.partition("=")
        OmegaConf.update(params, key, OmegaConf.create({"v": value}).v if value else None, merge=True)
    OmegaConf.save(params, dest / "params.yaml")
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"]):
        subprocess.run(cmd, cwd=dest, check=True)


def main(overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="transferlab-bench-") as tmp:
        project = Path(tmp) / "project"
        copy_project(project, overrides)
        profile = Path(tmp) / "profile.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
        env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}", TRANSFERLAB_PROFILE=str(profile))
        started = time.perf_counter()
        done = subprocess.run(["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True)
        total = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"dvc repro failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        records = [json.loads(line) for line in profile.read_text().splitlines()]
        metrics = json.loads((project / "reports/metrics.json").read_text())

    table = Table(title=f"dvc repro, default params{' + ' + ' '.join(overrides) if overrides else ''}")
    for column in ("stage", "wall s", "share of total", "peak RSS MB"):
        table.add_column(column, justify="right" if column != "stage" else "left")
    for r in records:
        name = r["stage"] + (f"@{r['argv'][0].split('=')[1]}" if r["argv"] else "")
        table.add_row(name, f"{r['wall_s']:.1f}", f"{r['wall_s'] / total:.1%}", f"{r['peak_rss_mb']:.0f}")
    stage_sum = sum(r["wall_s"] for r in records)
    table.add_row("sum of stages", f"{stage_sum:.1f}", f"{stage_sum / total:.1%}", "")
    table.add_row("dvc repro (wall)", f"{total:.1f}", "100%", f"max {max(r['peak_rss_mb'] for r in records):.0f}")
    console = Console()
    console.print(table)
    console.print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    console.print("test acc: " + ", ".join(f"{q} ({m['regime']}) {m['acc']:.3f}" for q, m in metrics.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
