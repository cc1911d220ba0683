"""`make retrain`: the scheduled retraining, runnable (and tested) locally.

1. Run the pipeline (`dvc repro`) with promotion deferred: each `evaluate` registers its
   model as a new version and re-scores the current champion on the same test set
   (reports/eval/<quadrant>/registry.json), but moves no alias.
2. Decide for all quadrants at once. A quadrant's challenger (the version this pipeline's
   model was registered as) *improves* when its test accuracy beats the champion's by more
   than ``evaluate.promote_margin``; it *regresses* when it is worse by more than
   ``retrain.tolerance``. If any quadrant regresses, nothing is promoted; otherwise every
   improved quadrant's challenger becomes `champion`. A quadrant without a champion yet
   promotes its first model.
3. Write reports/retrain.md: per quadrant champion vs challenger and the decision, and the
   test metrics against the last committed reports/metrics.json (``git show HEAD:...``);
   reports/retrain.json holds the outcome for scripts.

Exit codes: 0 = promoted (at least one quadrant), 10 = kept (nothing promoted), 1 = failed
(the pipeline or the decision could not run), 2 = bad input. (`make retrain` turns 10 into 0:
make itself can only say "failed".)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from transferlab import registry, tracking
from transferlab.cli import run_stage
from transferlab.config import QUADRANTS, ConfigError, load_config, paths, project_root

PROMOTED, KEPT, FAILED = 0, 10, 1


@dataclass
class Verdict:
    quadrant: str
    regime: str
    champion: int | None         # version before this run
    champion_acc: float | None   # re-scored on this test set
    challenger: int
    challenger_acc: float
    decision: str = ""           # promote | keep | unchanged | regressed

    @property
    def gain(self) -> float | None:
        return None if self.champion_acc is None else self.challenger_acc - self.champion_acc


def run_pipeline(root: Path) -> None:
    env = {**os.environ, registry.PROMOTION_ENV: "defer"}  # evaluate registers but moves no alias
    done = subprocess.run(["dvc", "repro"], cwd=root, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"`dvc repro` failed with exit code {done.returncode}")


def verdicts(cfg, margin: float, tolerance: float) -> list[Verdict]:
    client = tracking.client()
    found = []
    for quadrant in QUADRANTS:
        path = paths(cfg)["reports"] / "eval" / quadrant / "registry.json"
        if not path.is_file():
            raise RuntimeError(f"{path} not found: evaluate@{quadrant} did not run")
        record = json.loads(path.read_text())
        name = record["registered_model"]
        try:
            current = int(client.get_model_version_by_alias(name, registry.CHAMPION).version)
        except Exception:  # no champion yet
            current = None
        metrics = json.loads((paths(cfg)["reports"] / "eval" / quadrant / "metrics.json").read_text())
        verdict = Verdict(quadrant, metrics["regime"], current, record["champion_acc_same_test_set"],
                          record["version"], record["test_acc"])
        if current == verdict.challenger:
            verdict.decision = "unchanged"
        elif current is None or verdict.champion_acc is None:
            verdict.champion_acc = None
            verdict.decision = "promote"
        elif verdict.gain > margin:
            verdict.decision = "promote"
        elif verdict.gain < -tolerance:
            verdict.decision = "regressed"
        else:
            verdict.decision = "keep"
        found.append(verdict)
    return found


def promote(cfg, found: list[Verdict]) -> bool:
    """Move the aliases, or none of them when a quadrant regressed; whether any moved."""
    if any(v.decision == "regressed" for v in found):
        for v in found:
            if v.decision == "promote":
                v.decision = "keep (another quadrant regressed)"
        return False
    client = tracking.client()
    moved = False
    for v in found:
        if v.decision == "promote":
            name = registry.registered_name(cfg.tracking.experiment_name, v.quadrant)
            tracking.with_retry(lambda: client.set_registered_model_alias(name, registry.CHAMPION, str(v.challenger)))
            moved = True
    return moved


def committed_metrics(root: Path, rel: str = "reports/metrics.json") -> dict | None:
    done = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=root, capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else None


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def report(found: list[Verdict], outcome: str, margin: float, tolerance: float, before: dict | None,
           after: dict) -> str:
    lines = [f"# Retraining: {outcome}", "",
             f"Rule: a challenger replaces the champion when its test accuracy is higher by more than "
             f"{margin} (`evaluate.promote_margin`), re-scored on the same test set; if any quadrant is worse "
             f"by more than {tolerance} (`retrain.tolerance`), nothing is promoted.", "",
             "| quadrant | regime | champion (version: acc) | challenger (version: acc) | gain | decision |",
             "|---|---|---|---|---:|---|"]
    for v in found:
        champion = "none" if v.champion is None else f"v{v.champion}: {_acc(v.champion_acc)}"
        gain = "-" if v.gain is None else f"{v.gain:+.4f}"
        lines.append(f"| {v.quadrant} | {v.regime} | {champion} | v{v.challenger}: {_acc(v.challenger_acc)} | "
                     f"{gain} | {v.decision} |")
    lines += ["", "Test metrics against the last committed `reports/metrics.json`:", "",
              "| quadrant | acc before | acc now | diff | macro_f1 before | macro_f1 now | diff |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for quadrant in QUADRANTS:
        old, new = (before or {}).get(quadrant, {}), after.get(quadrant, {})
        row = [quadrant]
        for key in ("acc", "macro_f1"):
            a, b = old.get(key), new.get(key)
            row += [_acc(a), _acc(b), "-" if a is None or b is None else f"{b - a:+.4f}"]
        lines.append("| " + " | ".join(row) + " |")
    if before is None:
        lines += ["", "(no committed metrics to compare with)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    cfg = load_config("report", argv)
    margin = float(cfg.evaluate.promote_margin)
    tolerance = cfg.get("retrain", {}).get("tolerance", None)
    if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or tolerance < 0:
        raise ConfigError(f"retrain.tolerance={tolerance!r} is not allowed (must be a number >= 0)")
    root = project_root()
    try:
        run_pipeline(root)
        found = verdicts(cfg, margin, float(tolerance))
        moved = promote(cfg, found)
    except RuntimeError as err:
        print(f"retrain failed: {err}", file=sys.stderr)
        sys.exit(FAILED)
    outcome = "promoted" if moved else "kept"
    after = json.loads((paths(cfg)["reports"] / "metrics.json").read_text())
    text = report(found, outcome, margin, float(tolerance), committed_metrics(root), after)
    (paths(cfg)["reports"] / "retrain.md").write_text(text)
    (paths(cfg)["reports"] / "retrain.json").write_text(json.dumps(
        {"outcome": outcome, "quadrants": {v.quadrant: {"decision": v.decision, "champion": v.champion,
                                                         "challenger": v.challenger} for v in found}}, indent=2) + "\n")
    print(text)
    sys.exit(PROMOTED if moved else KEPT)


if __name__ == "__main__":
    run_stage("retrain", main)
