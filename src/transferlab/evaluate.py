"""Stage `evaluate`: per budget and quadrant the statistical call, and each quadrant's recommended regime
tested, logged and registered.

Reads every regime's models/finetune/<regime>/results.json and the race's models/race/results.json
(validation and test metrics of every budget, quadrant and seed, how each regime was tuned, what it
costs) and makes the call on validation data only (transferlab.analysis.verdict): a clear winner,
or a tie resolved to the cheapest tied regime. The test split is reported for every regime, never
used to choose. At the headline budget (the last of `budgets`), the recommended regime's
best-validation seed is the quadrant's model: tested again here (confusion matrix, per-class
table), logged to MLflow as `<quadrant>-<regime>` in an `evaluate/<quadrant>` run nested under the
pipeline's parent, and registered as a new version of `<experiment>-<quadrant>`, its description
saying why it was recommended; `champion` moves to it only when it beats the current champion on
the same test set (transferlab.tracking.registry).

Outputs: reports/evaluate/comparison.json (every regime's stats and each quadrant's
verdict), reports/evaluate/<quadrant>/{confusion.png, per_class.csv}. What the registry did
goes to .transferlab/registry/<quadrant>.json (version numbers are not DVC outputs).
"""

from __future__ import annotations

from transferlab.core.config import load_config
from transferlab.core.errors import ConfigError
from transferlab.core.names import QUADRANTS
from transferlab.core.paths import COMPARISON, ProjectPaths
from transferlab.core.preflight import prepared
from transferlab.core.stage import heavy_imports, run_stage
from transferlab.tracking.store import check_store


def evaluate_winners(cfg, verdicts, parent: str | None) -> None:
    """Test, log and register each quadrant's winner (``verdicts``: a ``Comparison``); write the stage's
    outputs (staged, then swapped in)."""
    import numpy as np

    from transferlab.analysis import figures
    from transferlab.core.artifacts import DatasetCard, RegistryDecision
    from transferlab.core.files import staged_dir, write_text
    from transferlab.data.arrays import load_split
    from transferlab.tracking import registry, runs
    from transferlab.training.budget import file_sha256
    from transferlab.training.evaluation import evaluate, per_class_table
    from transferlab.training.module import load_model

    where = ProjectPaths.of(cfg)
    experiment = cfg.tracking.experiment_name
    decisions: dict[str, RegistryDecision] = {}
    with staged_dir(where.evaluation) as staging:
        for steps in verdicts.budgets:
            for quadrant, other in verdicts.budgets[steps].items():
                card = DatasetCard.load(where.card(quadrant))
                other.num_classes = len(card.classes)
                other.near_copies = card.near_copies or None
        for quadrant, entry in verdicts.quadrants.items():
            verdict = entry.verdict
            winner, seed = verdict.recommended, verdict.chosen_seed
            raced = seed in entry.regimes[winner].race_seeds
            model_file = where.race_model(winner, quadrant) if raced else where.regime_model(winner, quadrant)
            module = load_model(model_file)
            classes = DatasetCard.load(where.card(quadrant)).classes
            images, labels = load_split(where.raw_dataset(quadrant), "test")
            metrics, matrix = evaluate(module, (images, labels), cfg.evaluate.batch_size)
            folder = staging / quadrant
            folder.mkdir()
            figures.confusion(
                matrix,
                classes,
                f"{quadrant}: winner {winner} (seed {seed}), test acc {metrics['acc']:.3f}",
                folder / "confusion.png",
            )
            write_text(folder / "per_class.csv", per_class_table(matrix, classes))
            sha = file_sha256(model_file)
            trained_in = runs.find_runs(experiment, f"tags.`model.sha256` = '{sha}'", max_results=1)
            tags = {
                "stage": "evaluate",
                "quadrant": quadrant,
                "regime": winner,
                "seed": str(seed),
                "dvc.stage": "evaluate",
                "model.sha256": sha,
                **({"training_run": trained_in[0].info.run_id} if trained_in else {}),
            }
            run_id = runs.start_run(
                experiment,
                f"evaluate/{quadrant}",
                tags,
                {"model_file": str(model_file.relative_to(where.root))},
                parent,
                seed,
            )
            runs.log_metrics(run_id, {f"test/{k}": v for k, v in metrics.items()})
            for name in ("confusion.png", "per_class.csv"):
                runs.log_artifact(run_id, folder / name, "evaluation")
            logged = registry.log_model(run_id, module.net, images, name=f"{quadrant}-{winner}")
            summary = entry.regimes[winner]
            description = (
                f"{winner} on {quadrant}, recommended at {verdicts.headline} optimizer steps per run: "
                f"{verdict.reason}. Its validation accuracy {summary.val.mean:.3f} over seeds {summary.seeds}; this "
                f"is its best-validation seed ({seed}), test accuracy {metrics['acc']:.4f}."
            )
            decision = registry.register(
                registry.registered_name(experiment, quadrant),
                logged,
                {
                    "quadrant": quadrant,
                    "regime": winner,
                    "seed": str(seed),
                    "test_acc": f"{metrics['acc']:.4f}",
                    **verdict_tags(verdict),
                },
                description,
                int(np.trace(matrix)),
                images,
                labels,
                margin=float(cfg.evaluate.promote_margin),
            )
            runs.finish_run(run_id)
            decisions[quadrant] = decision
            verdict_text = (
                "now champion"
                if decision.promoted
                else "promotion left to `make retrain`"
                if decision.deferred
                else f"champion stays version {decision.champion_version}"
            )
            print(
                f"{quadrant}: winner {winner} (seed {seed}), test acc {metrics['acc']:.4f}; registered "
                f"{decision.registered_model} version {decision.version}: {verdict_text}"
            )
        verdicts.save(staging / COMPARISON)
    for quadrant, decision in decisions.items():
        decision.save(where.registry_record(quadrant))


def verdict_tags(verdict) -> dict[str, str]:
    """The comparison's call on a registered version (the registry page shows tags, not the report): clear or
    tie, the tied set, and the leader's lead over the runner-up with its interval."""
    tags = {"call": verdict.call, "tied": ",".join(verdict.tied)}
    rival = verdict.rivals.get(verdict.runner_up) if verdict.runner_up else None
    if rival is not None:
        tags["lead"] = (
            f"{verdict.leader} - {verdict.runner_up}: {rival.diff:+.3f} [{rival.low:+.3f}, {rival.high:+.3f}] "
            f"at {verdict.level:.0%}"
        )
    return tags


def main(argv: list[str]) -> None:
    cfg = load_config("evaluate", argv)
    where = ProjectPaths.of(cfg)
    inputs = {where.regime_results(r): f"finetune@{r}" for r in cfg.regimes}
    inputs[where.race_results] = "race"
    inputs.update({where.raw_dataset(q) / "x_test.npy": "download" for q in QUADRANTS})
    with prepared("evaluate", inputs, [where.evaluation], check_store):
        with heavy_imports():
            from transferlab.analysis.verdict import call_level, comparison
            from transferlab.core.artifacts import RaceResults, RegimeResults
            from transferlab.tracking.runs import open_pipeline
        results = {r: RegimeResults.load(where.regime_results(r)) for r in cfg.regimes}
        for regime, found in results.items():
            budgets = sorted(int(b) for b in found.budgets)
            first = found.budgets.get(str(cfg.budgets[0]), {})
            missing = [q for q in QUADRANTS if q not in first]
            if (
                budgets != list(cfg.budgets)
                or missing
                or sorted(map(int, first[QUADRANTS[0]].seeds)) != sorted(cfg.seeds)
            ):
                raise ConfigError(
                    f"{where.regime_results(regime)} is from other params (budgets, quadrants or seeds differ "
                    f"from params.yaml): re-run `dvc repro finetune@{regime}`"
                )
        race = RaceResults.load(where.race_results)
        level = float(cfg.compare.level)
        at = call_level(level, len(cfg.seeds), int(cfg.compare.max_seeds))
        verdicts = comparison(
            {r: found.budgets for r, found in results.items()},
            race.budgets,
            list(QUADRANTS),
            list(cfg.budgets),
            level,
            at,
        )
        parent = open_pipeline(cfg).run_id
        evaluate_winners(cfg, verdicts, parent)


if __name__ == "__main__":
    run_stage("evaluate", main)
