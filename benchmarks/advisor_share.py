"""The advisor's time as a share of the comparison's (issue 25 item 5: at most 2%), imports included.

    python benchmarks/advisor_share.py WORKSPACE PROFILE [key=value ...]

WORKSPACE is a project where `dvc repro` ran with TRANSFERLAB_PROFILE=PROFILE (each stage appended
its wall time). The comparison's time is that run's: the four finetune@<regime> stages and the race,
start-up and imports included. The advisor's is measured here, in the same workspace, twice: the
whole `python -m transferlab.advise` process from spawn to exit (the faster of the two is kept), and
the run's own `advise` entry of PROFILE is shown beside it. `key=value` arguments go to the stage
(e.g. `advise.bank=/abs/path/bank.csv` for a workspace whose params.yaml predates the bank).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table


def stage_seconds(record: dict) -> float:
    return record["startup_s"] + record["imports_s"] + record["main_s"]


def main() -> None:
    workspace, profile, overrides = Path(sys.argv[1]).resolve(), Path(sys.argv[2]), sys.argv[3:]
    records = [json.loads(line) for line in profile.read_text().splitlines() if line.strip()]
    comparison = {
        (r["stage"] + ("@" + r["argv"][0].split("=", 1)[1] if r["argv"] else "")): stage_seconds(r)
        for r in records
        if r["stage"] in ("finetune", "race") and r["exit"] == 0
    }
    in_run = [stage_seconds(r) for r in records if r["stage"] == "advise" and r["exit"] == 0 and not r["argv"]]
    env = {k: v for k, v in os.environ.items() if k != "TRANSFERLAB_PROFILE"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    times = []
    for _ in range(2):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "transferlab.advise", *overrides],
            cwd=workspace,
            env=env,
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - started)
    total = sum(comparison.values())
    table = Table(title=f"advisor vs comparison ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)")
    for column in ("what", "seconds", "share of the comparison"):
        table.add_column(column, justify="right" if column != "what" else "left")
    for name, seconds in comparison.items():
        table.add_row(name, f"{seconds:.1f}", "")
    table.add_row("[bold]comparison (finetune x 4 + race)", f"{total:.1f}", "100%")
    table.add_row("advise, this process, spawn to exit (best of 2)", f"{min(times):.1f}", f"{min(times) / total:.2%}")
    if in_run:
        table.add_row("advise, in the profiled run", f"{in_run[-1]:.1f}", f"{in_run[-1] / total:.2%}")
    Console().print(table)
    met = "met" if min(times) / total <= 0.02 else "not met"
    print(f"advise: {', '.join(f'{t:.2f}' for t in times)} s; goal <= 2%: {met}")


if __name__ == "__main__":
    main()
