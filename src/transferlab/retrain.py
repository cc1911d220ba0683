"""`make retrain`: the scheduled retraining, runnable (and tested) locally.

1. Run the pipeline (`dvc repro`) with promotion deferred: `evaluate` registers each quadrant's
   winner as a new version and re-scores the current champion on the same test set
   (.transferlab/registry/<quadrant>.json), but moves no alias. If nothing changed, DVC runs
   nothing and there is no challenger.
2. Decide for all quadrants at once. A quadrant's challenger *improves* when its test accuracy
   beats the champion's by more than ``evaluate.promote_margin``; it *regresses* when it is
   worse by more than ``retrain.tolerance``. If any quadrant regresses, nothing is promoted;
   otherwise every improved quadrant's challenger becomes `champion`. A quadrant without a
   champion yet promotes its first model.
3. Write reports/retrain.md: per quadrant champion vs challenger and the decision, and the
   winners' test accuracy against the last committed reports/metrics.json (``git show HEAD:...``);
   reports/retrain.json holds the outcome for scripts.

Exit codes: 0 = promoted (at least one quadrant), 10 = kept (nothing promoted), 1 = failed
(the pipeline or the decision could not run), 2 = bad input. (`make retrain` turns 10 into 0:
make itself can only say "failed".)
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from transferlab.core.artifacts import MetricsFile, RegistryDecision
from transferlab.core.config import load_config
from transferlab.core.files import write_json, write_text
from transferlab.core.names import QUADRANTS, REGIMES
from transferlab.core.paths import ProjectPaths
from transferlab.core.stage import run_stage

PROMOTED, KEPT, FAILED = 0, 10, 1


@dataclass
class QuadrantDecision:
    quadrant: str
    regime: str | None
    champion: int | None  # version before this run
    champion_acc: float | None  # re-scored on this test set
    challenger: int | None  # None: evaluate did not run (nothing changed)
    challenger_acc: float | None
    decision: str = ""  # promote | keep | unchanged | regressed

    @property
    def gain(self) -> float | None:
        if self.champion_acc is None or self.challenger_acc is None:
            return None
        return self.challenger_acc - self.champion_acc


def run_pipeline(root: Path) -> None:
    from transferlab.tracking.registry import PROMOTION_ENV

    env = {**os.environ, PROMOTION_ENV: "defer"}  # evaluate registers but moves no alias
    done = subprocess.run(["dvc", "repro"], cwd=root, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"`dvc repro` failed with exit code {done.returncode}")


def decide(
    records: dict[str, RegistryDecision | None], champions: dict[str, int | None], margin: float, tolerance: float
) -> list[QuadrantDecision]:
    """The decision for every quadrant, from what evaluate registered (None: it did not run) and the
    current champion versions; nothing is promoted when any quadrant regressed."""
    found = []
    for quadrant in QUADRANTS:
        record, current = records.get(quadrant), champions.get(quadrant)
        if record is None:
            found.append(QuadrantDecision(quadrant, None, current, None, None, None, "unchanged (nothing re-ran)"))
            continue
        verdict = QuadrantDecision(
            quadrant, record.regime, current, record.champion_acc_same_test_set, record.version, record.test_acc
        )
        if current == verdict.challenger:
            verdict.decision = "unchanged"
        elif current is None or verdict.champion_acc is None or verdict.gain is None:
            verdict.champion_acc = None
            verdict.decision = "promote"
        elif verdict.gain > margin:
            verdict.decision = "promote"
        elif verdict.gain < -tolerance:
            verdict.decision = "regressed"
        else:
            verdict.decision = "keep"
        found.append(verdict)
    if any(v.decision == "regressed" for v in found):
        for v in found:
            if v.decision == "promote":
                v.decision = "keep (another quadrant regressed)"
    return found


def current_champions(cfg) -> dict[str, int | None]:
    from transferlab.tracking import registry
    from transferlab.tracking.store import client

    champions: dict[str, int | None] = {}
    for quadrant in QUADRANTS:
        try:
            version = client().get_model_version_by_alias(
                registry.registered_name(cfg.tracking.experiment_name, quadrant), registry.CHAMPION
            )
            champions[quadrant] = int(version.version)
        except Exception:  # no registered model or no champion yet
            champions[quadrant] = None
    return champions


def promote(cfg, found: list[QuadrantDecision]) -> bool:
    """Move the aliases of the quadrants decided "promote"; whether any moved."""
    from transferlab.tracking import registry
    from transferlab.tracking.store import client, with_retry

    moved = False
    for v in found:
        if v.decision == "promote":
            name = registry.registered_name(cfg.tracking.experiment_name, v.quadrant)
            with_retry(lambda: client().set_registered_model_alias(name, registry.CHAMPION, str(v.challenger)))
            with_retry(lambda: client().set_registered_model_tag(name, "champion_regime", v.regime))
            moved = True
    return moved


def committed_metrics(root: Path, rel: str = "reports/metrics.json") -> MetricsFile | None:
    """The last committed metrics, or None (none committed, or in a form this code cannot read)."""
    from transferlab.core.errors import ConfigError

    done = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        return None
    try:
        return MetricsFile.parse_text(done.stdout, f"HEAD:{rel}")
    except ConfigError as err:
        print(f"retrain: the committed metrics are left out of the comparison ({err})", file=sys.stderr)
        return None


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _winner(metrics: MetricsFile | None, quadrant: str) -> str:
    winner = None if metrics is None else metrics.winner.get(quadrant)
    return REGIMES[winner - 1] if winner is not None and 1 <= winner <= len(REGIMES) else "-"


def report(
    found: list[QuadrantDecision],
    outcome: str,
    margin: float,
    tolerance: float,
    before: MetricsFile | None,
    after: MetricsFile,
) -> str:
    lines = [
        f"# Retraining: {outcome}",
        "",
        f"Rule: a challenger (this pipeline's winner of a quadrant) replaces the champion when its test accuracy "
        f"is higher by more than {margin} (`evaluate.promote_margin`), re-scored on the same test set; if any "
        f"quadrant is worse by more than {tolerance} (`retrain.tolerance`), nothing is promoted.",
        "",
        "| quadrant | challenger's regime | champion (version: acc) | challenger (version: acc) | gain | decision |",
        "|---|---|---|---|---:|---|",
    ]
    for v in found:
        champion = "none" if v.champion is None else f"v{v.champion}: {_acc(v.champion_acc)}"
        challenger = "-" if v.challenger is None else f"v{v.challenger}: {_acc(v.challenger_acc)}"
        gain = "-" if v.gain is None else f"{v.gain:+.4f}"
        lines.append(f"| {v.quadrant} | {v.regime or '-'} | {champion} | {challenger} | {gain} | {v.decision} |")
    lines += [
        "",
        "The winners' test accuracy against the last committed `reports/metrics.json`:",
        "",
        "| quadrant | winner before | acc before | winner now | acc now | diff |",
        "|---|---|---:|---|---:|---:|",
    ]
    for quadrant in QUADRANTS:
        a = None if before is None else before.winner_acc.get(quadrant)
        b = after.winner_acc.get(quadrant)
        lines.append(
            f"| {quadrant} | {_winner(before, quadrant)} | {_acc(a)} | {_winner(after, quadrant)} | {_acc(b)} | "
            f"{'-' if a is None or b is None else f'{b - a:+.4f}'} |"
        )
    if before is None:
        lines += ["", "(no committed metrics to compare with)"]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    import shutil

    cfg = load_config("retrain", argv)
    margin, tolerance = float(cfg.evaluate.promote_margin), float(cfg.retrain.tolerance)
    where = ProjectPaths.of(cfg)
    root = where.root
    shutil.rmtree(where.scratch("registry"))  # only this run's evaluate may leave challengers
    try:
        run_pipeline(root)
        registered = {
            q: RegistryDecision.load(where.registry_record(q)) if where.registry_record(q).is_file() else None
            for q in QUADRANTS
        }
        found = decide(registered, current_champions(cfg), margin, tolerance)
        moved = promote(cfg, found)
    except RuntimeError as err:
        print(f"retrain failed: {err}", file=sys.stderr)
        sys.exit(FAILED)
    outcome = "promoted" if moved else "kept"
    reports = where.reports
    after = MetricsFile.load(where.metrics)
    text = report(found, outcome, margin, tolerance, committed_metrics(root), after)
    write_text(reports / "retrain.md", text)
    write_json(
        reports / "retrain.json",
        {
            "outcome": outcome,
            "quadrants": {
                v.quadrant: {"decision": v.decision, "champion": v.champion, "challenger": v.challenger} for v in found
            },
        },
    )
    print(text)
    sys.exit(PROMOTED if moved else KEPT)


if __name__ == "__main__":
    run_stage("retrain", main)
