"""Time and peak memory of every pipeline stage under `dvc repro`, and the share of the pipeline's wall
time spent starting interpreters and importing libraries, all measured in one run.

Copies the project (git-tracked files) into a temporary directory and runs `dvc repro` there with
TRANSFERLAB_PROFILE set (each stage appends its wall time and peak RSS) and PYTHONPROFILEIMPORTTIME=1
(every Python process reports how long each import took; DVC passes the stages' stderr through). A
stage's start-up cost is its interpreter's import time (the sum of the top-level imports, transitive
imports included, the lazy ones inside functions too) plus a bare interpreter's start (~0.02 s). `key=value` arguments
edit params.yaml of the copy first.

Usage: python benchmarks/pipeline_stages.py [key=value ...]
"""

from __future__ import annotations

import json
import os
import platform
import re
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
BARE_INTERPRETER_S = 0.02  # `python -S -c pass` on the 2-core machine; everything else is an import


def copy_project(dest: Path, overrides: list[str]) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    (dest / "dvc.lock").unlink(missing_ok=True)
    params = OmegaConf.load(dest / "params.yaml")
    for item in overrides:
        key, _, value = item.partition("=")
        OmegaConf.update(params, key, OmegaConf.create({"v": value}).v if value else None, merge=True)
    OmegaConf.save(params, dest / "params.yaml")
    for cmd in (
        ["git", "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "bench"],
    ):
        subprocess.run(cmd, cwd=dest, check=True)


def import_seconds_per_stage(output: str) -> dict[str, float]:
    """{stage: seconds of imports} from `-X importtime` lines, per "Running stage" section of dvc's output.
    Only top-level imports (no indentation after the '|') are summed: their times include the nested ones."""
    found: dict[str, float] = {}
    stage = None
    for line in output.splitlines():
        started = re.match(r"Running stage '([^']+)'", line)
        if started:
            stage = started.group(1)
            found[stage] = 0.0
            continue
        timing = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if timing and stage is not None and timing.group(2) == " ":
            found[stage] += int(timing.group(1)) / 1e6
    return found


def main(overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="transferlab-bench-") as tmp:
        project = Path(tmp) / "project"
        copy_project(project, overrides)
        profile = Path(tmp) / "profile.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
        env.update(
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
            TRANSFERLAB_PROFILE=str(profile),
            PYTHONPROFILEIMPORTTIME="1",
        )
        started = time.perf_counter()
        done = subprocess.run(["dvc", "repro"], cwd=project, env=env, capture_output=True, text=True)
        total = time.perf_counter() - started
        output = done.stdout + done.stderr
        if done.returncode != 0:
            sys.exit(f"dvc repro failed:\n{output[-3000:]}")
        records = [json.loads(line) for line in profile.read_text().splitlines()]
        imports = import_seconds_per_stage(output)
        summary = (project / "reports/summary.md").read_text()
        metrics = json.loads((project / "reports/metrics.json").read_text())

    table = Table(title=f"dvc repro, default params{' + ' + ' '.join(overrides) if overrides else ''}")
    for column in ("stage", "wall s", "share", "start-up + imports s", "peak RSS MB"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    stage_names = list(imports)
    startup_total = 0.0
    for name, record in zip(stage_names, records):
        wall = record["startup_s"] + record["main_s"]
        startup = imports[name] + BARE_INTERPRETER_S
        startup_total += startup
        table.add_row(name, f"{wall:.1f}", f"{wall / total:.1%}", f"{startup:.1f}", f"{record['peak_rss_mb']:.0f}")
    stage_sum = sum(r["startup_s"] + r["main_s"] for r in records)
    table.add_row("sum of stages", f"{stage_sum:.1f}", f"{stage_sum / total:.1%}", f"{startup_total:.1f}", "")
    table.add_row(
        "dvc repro (wall)",
        f"{total:.1f}",
        "100%",
        f"{startup_total / total:.1%} of the wall",
        f"max {max(r['peak_rss_mb'] for r in records):.0f}",
    )
    console = Console()
    console.print(table)
    console.print(
        f"start-up and imports: {startup_total:.1f} s of {total:.1f} s = {startup_total / total:.1%} "
        f"(goal <= 10%); DVC's own bookkeeping: {total - stage_sum:.1f} s"
    )
    walls = {name: r["startup_s"] + r["main_s"] for name, r in zip(stage_names, records)}
    comparison = sum(w for name, w in walls.items() if name.startswith("finetune@") or name == "cut_sweep")
    advisor = metrics.get("advisor", {})
    if "advise" in walls:
        console.print(
            f"advisor: {walls['advise']:.1f} s against the comparison's {comparison:.1f} s (finetune@* + "
            f"cut_sweep) = {walls['advise'] / comparison:.1%} (goal <= 2%); picks within one std of the "
            f"winner: {advisor.get('hits')} of 4 (goal >= 3); Spearman on the cut sweeps: "
            + ", ".join(f"{k.split('_', 1)[1]} {v:.2f}" for k, v in advisor.items() if k.startswith("spearman_"))
            + " (goal >= 0.8 on both)"
        )
    console.print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}")
    console.print("\n".join(line for line in summary.splitlines() if line.startswith("| ") and "**" in line))


if __name__ == "__main__":
    main(sys.argv[1:])
