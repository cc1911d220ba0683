"""Stage `advise`: predict, in seconds and without training, which regime and cut point will win on a target.

From one forward pass of the frozen pretrained network (and one of the same architecture with random
weights) over the target's training images (at most `advise.max_images`), for every named stage:
LogME, leave-one-out 5-NN accuracy and a 3-fold linear probe of the pooled features, the same three
on the random features, and the proxy A-distance to the source's validation images (similarity).
Then the measured cases nearest to it in cases/bank.csv (`advise.bank`; those of this same
experiment left out) pick the regime, with its expected regret and hit rate on them
(transferlab.analysis.advice); the a-priori LogME rule's pick is kept beside it as a baseline.
reports/advice/scores.json scores every rule on the whole bank, held out case by case. The report
sets the advice beside the measured winner and the course note's rule.

`dvc repro` advises on every quadrant (reports/advice/<quadrant>.json); by hand, on any prepared
dataset: `python -m transferlab.advise dataset=<name>` (a folder of data/raw/, e.g. one an experiment
of your own images prepared). Each advice is an MLflow run (tag stage=advise) with its scores as
metrics per stage.
"""

from __future__ import annotations

import time
from pathlib import Path

from transferlab.core.artifacts import Advice, Case, CaseBank, DatasetCard, PretrainMeta
from transferlab.core.config import as_dict, load_config
from transferlab.core.errors import ConfigError
from transferlab.core.names import COURSE_NOTE, QUADRANTS
from transferlab.core.paths import ProjectPaths
from transferlab.core.preflight import prepared, require_inputs
from transferlab.core.stage import heavy_imports, run_stage
from transferlab.tracking.store import check_store


def check_advisable(card_file: Path) -> None:
    """A dataset the advisor can score: at least 2 classes, each with at least 2 training images
    (LogME regresses each class's indicator; one class or one image per class leaves nothing to rank)."""
    card = DatasetCard.load(card_file)
    per_class = card.counts_per_class.get("train", {})
    folder, classes = card_file.parent, card.classes
    if len(classes) < 2:
        raise ConfigError(f"{folder}: {len(classes)} class(es) {classes}: the advisor needs at least 2 classes")
    few = {c: per_class.get(c, 0) for c in classes if per_class.get(c, 0) < 2}
    if few:
        raise ConfigError(f"{folder}: too few training images for the advisor in {few} (at least 2 per class)")


def check_stages(meta_file: Path) -> None:
    """The pretrained model must name its stages (the advisor scores each one as a cut point)."""
    stages = PretrainMeta.load(meta_file).stages
    if not stages:
        raise ConfigError(
            f"{meta_file}: the pretrained model names no stages (stages={stages!r}): the advisor "
            f"scores each named stage; use a transferlab backbone (conf/model/)"
        )


def features(backbone, images, labels, stages: list[str]):
    from transferlab.data.arrays import ImageArrayDataset
    from transferlab.training.feature_cache import pooled_features

    found, _ = pooled_features(backbone, ImageArrayDataset(images, labels), stages)
    return {stage: value.numpy() for stage, value in found.items()}


def probe_scores(pretrained, random, images, labels, source_features: dict, max_images: int):
    """{stage: StageScores} on at most ``max_images`` of ``images`` (the first of each class), and how many
    were scored (deterministic: the same inputs give the same numbers)."""
    import numpy as np

    from transferlab.analysis.transferability import LogME, knn_accuracy, linear_probe_accuracy, proxy_a_distance
    from transferlab.core.artifacts import StageScores
    from transferlab.data.arrays import first_per_class

    counts = np.bincount(labels)
    keep = first_per_class(labels, max(2, min(int(counts.min()), max_images // len(counts))))
    x, y = np.asarray(images[keep]), labels[keep]
    stages = pretrained.stage_names
    trained, untrained = features(pretrained, x, y, stages), features(random, x, y, stages)
    scores = {
        stage: StageScores(
            logme=round(LogME().fit(trained[stage], y), 6),
            logme_random=round(LogME().fit(untrained[stage], y), 6),
            knn=round(knn_accuracy(trained[stage], y), 6),
            knn_random=round(knn_accuracy(untrained[stage], y), 6),
            probe=round(linear_probe_accuracy(trained[stage], y), 6),
            probe_random=round(linear_probe_accuracy(untrained[stage], y), 6),
            pad=round(proxy_a_distance(source_features[stage], trained[stage], seed=0), 6) if source_features else None,
        )
        for stage in stages
    }
    return scores, int(len(y))


def advise_one(cfg, dataset: str, pretrained, random, source_features: dict, bank: list[Case]) -> Advice:
    """The advice for one prepared dataset: the bank's pick (when ``bank`` has cases) and the a-priori rule's."""
    import numpy as np

    from transferlab.analysis.advice import bank_pick, recommend
    from transferlab.data.arrays import load_split

    where = ProjectPaths.of(cfg)
    images, labels = load_split(where.raw_dataset(dataset), "train")
    classes = len(DatasetCard.load(where.card(dataset)).classes)
    scores, scored = probe_scores(pretrained, random, images, labels, source_features, cfg.advise.max_images)
    per_class = float(np.mean(np.bincount(labels, minlength=classes)))
    a_priori = recommend(
        per_class,
        list(scores),
        {s: v.logme for s, v in scores.items()},
        {s: v.logme_random for s, v in scores.items()},
        cfg.advise.small_per_class,
    )
    pick, from_bank = bank_pick(scores, classes, per_class, bank) if bank else (a_priori, None)
    return Advice(
        dataset=dataset,
        classes=classes,
        images_per_class=round(per_class, 3),
        images_scored=scored,
        stages=scores,
        recommendation=pick,
        a_priori=a_priori,
        bank=from_bank,
        course_note=COURSE_NOTE.get(dataset),
    )


def networks(cfg):
    """(the pretrained backbone, the same architecture with random weights (seeded), the pretrained
    features of the source's validation images at every stage), both networks in eval mode."""
    import numpy as np
    import torch

    from transferlab.data.arrays import load_split
    from transferlab.models import build_backbone
    from transferlab.training.runner import pretrained_state

    pretrained = build_backbone(as_dict(cfg.model), cfg.data.image_size)
    pretrained.load_state_dict(pretrained_state(cfg))
    torch.manual_seed(cfg.seed if cfg.seed is not None else 0)
    random = build_backbone(as_dict(cfg.model), cfg.data.image_size)
    where = ProjectPaths.of(cfg)
    source_features = {}  # no source images (an ImageNet network, no source folder): no proxy A-distance
    if DatasetCard.load(where.card("source")).counts["val"]:
        source_x, source_y = load_split(where.raw_dataset("source"), "val")
        source_features = features(pretrained.eval(), np.asarray(source_x), source_y, pretrained.stage_names)
    return pretrained.eval(), random.eval(), source_features


def advise(cfg, datasets: list[str], parent: str | None, bank: list[Case]) -> dict[str, Advice]:
    from transferlab.tracking import runs

    started = time.perf_counter()
    pretrained, random, source_features = networks(cfg)
    shared = time.perf_counter() - started
    found = {}
    for dataset in datasets:
        begun = time.perf_counter()
        advice = advise_one(cfg, dataset, pretrained, random, source_features, bank)
        seconds = time.perf_counter() - begun + shared / len(datasets)
        found[dataset] = advice
        rule = advice.recommendation
        tags = {
            "stage": "advise",
            "quadrant": dataset,
            "regime": rule.regime,
            "seed": str(cfg.seed),
            "dvc.stage": "advise",
            **({"cut_at": rule.cut_at} if rule.cut_at else {}),
            "mlflow.note.content": rule.reason,
            "a_priori_regime": advice.a_priori.regime,
            **({"unlike_bank": str(advice.bank.unlike_bank).lower()} if advice.bank else {}),
            **runs.data_tags(cfg, dataset),
        }
        run_id = runs.start_run(
            cfg.tracking.experiment_name,
            f"advise/{dataset}",
            tags,
            {
                "model": cfg.model.name,
                "max_images": cfg.advise.max_images,
                "small_per_class": cfg.advise.small_per_class,
                "images_scored": advice.images_scored,
                "bank": cfg.advise.bank,
                "bank_cases": advice.bank.bank_cases if advice.bank else 0,
            },
            parent,
            cfg.seed,
        )
        metrics = {"images_per_class": advice.images_per_class, "seconds": seconds}
        if advice.bank:
            metrics.update(expected_regret=advice.bank.expected_regret, bank_hit_rate=advice.bank.hit_rate)
        for stage, values in advice.stages.items():
            scores = values.model_dump().items()  # pad is None without source images: not a metric then
            metrics.update({f"{name}/{stage}": value for name, value in scores if value is not None})
        runs.log_metrics(run_id, metrics)
        runs.finish_run(run_id)
        print(
            f"{dataset}: advise {rule.regime}{' at ' + rule.cut_at if rule.cut_at else ''} "
            f"({seconds:.1f} s): {rule.reason}"
        )
    return found


def load_bank(cfg) -> tuple[list[Case], list[Case]]:
    """(every case of ``advise.bank``, those the advice may draw on: not this experiment's own); one line when
    the file is missing or malformed. Cases of any network may share the bank: a case's descriptor
    (analysis/advice.py) is made of aggregates over its own network's stages (the last stage's probe, the
    best stage's lead over it, the best random-weights probe, the k-NN gain), never of one named stage."""
    if cfg.advise.bank is None:
        return [], []
    cases = CaseBank.load(ProjectPaths.of(cfg).case_bank(cfg.advise.bank)).cases
    return cases, [c for c in cases if c.scenario != cfg.experiment.name]


def main(argv: list[str]) -> None:
    cfg = load_config("advise", argv)
    where = ProjectPaths.of(cfg)
    datasets = [cfg.args.dataset] if cfg.args.get("dataset") else list(QUADRANTS)
    inputs = {**where.pretrain_inputs(), **where.dataset_inputs(["source", *datasets], augmented=False)}
    require_inputs(inputs)
    check_stages(where.pretrain_meta)
    for dataset in datasets:
        check_advisable(where.card(dataset))
    every_case, bank = load_bank(cfg)
    with prepared("advise", inputs, [where.advice], check_store):
        with heavy_imports():
            from transferlab.analysis.advice import score_rules
            from transferlab.core.files import staged_dir
            from transferlab.tracking.runs import open_pipeline
        parent = open_pipeline(cfg).run_id
        found = advise(cfg, datasets, parent, bank)
        if cfg.args.get("dataset"):  # one dataset by hand: its file only, the pipeline's others stay
            found[datasets[0]].save(where.advice_file(datasets[0]))
            return
        with staged_dir(where.advice) as staging:
            for dataset, advice in found.items():
                advice.save(staging / f"{dataset}.json")
            if every_case:
                score_rules(every_case, cfg.advise.small_per_class).save(staging / where.advice_scores.name)


if __name__ == "__main__":
    run_stage("advise", main)
