"""Stage `advise`: predict, in seconds and without training, which regime and cut point will win on a target.

From one forward pass of the frozen pretrained network (and one of the same architecture with random
weights) over the target's training images (at most `advise.max_images`), for every named stage:
LogME of the pooled features (transferability), and the proxy A-distance to the source's validation
images (similarity); then the a-priori rule of transferlab.analysis.advice picks a regime and a cut
point, with the numbers behind it and a sentence of reasoning. The report sets the advice beside
the measured winner and the course note's rule.

`dvc repro` advises on every quadrant (reports/advice/<quadrant>.json); by hand, on any prepared
dataset: `python -m transferlab.advise dataset=<name>` (a folder of data/raw/, e.g. one an experiment
of your own images prepared). Each advice is an MLflow run (tag stage=advise) with its scores as
metrics per stage.
"""

from __future__ import annotations

import time
from pathlib import Path

from transferlab.core.artifacts import Advice, DatasetCard, PretrainMeta
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


def stratified_first(labels, per_class: int):
    import numpy as np

    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)]))


def features(backbone, images, labels, stages: list[str]):
    from transferlab.data.arrays import ImageArrayDataset
    from transferlab.training.feature_cache import pooled_features

    found, _ = pooled_features(backbone, ImageArrayDataset(images, labels), stages)
    return {stage: value.numpy() for stage, value in found.items()}


def advise_one(cfg, dataset: str, pretrained, random, source_features: dict) -> Advice:
    """The advice for one prepared dataset (deterministic: the same inputs give the same numbers)."""
    import numpy as np

    from transferlab.analysis.advice import recommend
    from transferlab.analysis.transferability import LogME, proxy_a_distance
    from transferlab.core.artifacts import StageScores
    from transferlab.data.arrays import load_split

    where = ProjectPaths.of(cfg)
    images, labels = load_split(where.raw_dataset(dataset), "train")
    classes = len(DatasetCard.load(where.card(dataset)).classes)
    counts = np.bincount(labels, minlength=classes)
    keep = stratified_first(labels, max(2, min(int(counts.min()), cfg.advise.max_images // classes)))
    x, y = np.asarray(images[keep]), labels[keep]
    stages = pretrained.stage_names
    trained, untrained = features(pretrained, x, y, stages), features(random, x, y, stages)
    scores = {
        stage: StageScores(
            logme=round(LogME().fit(trained[stage], y), 6),
            logme_random=round(LogME().fit(untrained[stage], y), 6),
            pad=round(proxy_a_distance(source_features[stage], trained[stage], seed=0), 6),
        )
        for stage in stages
    }
    per_class = float(np.mean(counts))
    rule = recommend(
        per_class,
        stages,
        {s: v.logme for s, v in scores.items()},
        {s: v.logme_random for s, v in scores.items()},
        cfg.advise.small_per_class,
    )
    return Advice(
        dataset=dataset,
        classes=classes,
        images_per_class=round(per_class, 3),
        images_scored=int(len(y)),
        stages=scores,
        recommendation=rule,
        course_note=COURSE_NOTE.get(dataset),
    )


def advise(cfg, datasets: list[str], parent: str | None) -> dict[str, Advice]:
    import numpy as np
    import torch

    from transferlab.data.arrays import load_split
    from transferlab.models import build_backbone
    from transferlab.tracking import runs
    from transferlab.training.runner import pretrained_state

    started = time.perf_counter()
    pretrained = build_backbone(as_dict(cfg.model), cfg.data.image_size)
    pretrained.load_state_dict(pretrained_state(cfg))
    torch.manual_seed(cfg.seed if cfg.seed is not None else 0)
    random = build_backbone(as_dict(cfg.model), cfg.data.image_size)
    source_x, source_y = load_split(ProjectPaths.of(cfg).raw_dataset("source"), "val")
    source_features = features(pretrained.eval(), np.asarray(source_x), source_y, pretrained.stage_names)
    shared = time.perf_counter() - started
    found = {}
    for dataset in datasets:
        begun = time.perf_counter()
        advice = advise_one(cfg, dataset, pretrained.eval(), random.eval(), source_features)
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
            },
            parent,
            cfg.seed,
        )
        metrics = {"images_per_class": advice.images_per_class, "seconds": seconds}
        for stage, values in advice.stages.items():
            metrics.update({f"{name}/{stage}": value for name, value in values.model_dump().items()})
        runs.log_metrics(run_id, metrics)
        runs.finish_run(run_id)
        print(
            f"{dataset}: advise {rule.regime}{' at ' + rule.cut_at if rule.cut_at else ''} "
            f"({seconds:.1f} s): {rule.reason}"
        )
    return found


def main(argv: list[str]) -> None:
    cfg = load_config("advise", argv)
    where = ProjectPaths.of(cfg)
    datasets = [cfg.args.dataset] if cfg.args.get("dataset") else list(QUADRANTS)
    inputs = {**where.pretrain_inputs(), **where.dataset_inputs(["source", *datasets], augmented=False)}
    require_inputs(inputs)
    check_stages(where.pretrain_meta)
    for dataset in datasets:
        check_advisable(where.card(dataset))
    with prepared("advise", inputs, [where.advice], check_store):
        with heavy_imports():
            from transferlab.core.files import staged_dir
            from transferlab.tracking.runs import open_pipeline
        parent = open_pipeline(cfg).run_id
        found = advise(cfg, datasets, parent)
        if cfg.args.get("dataset"):  # one dataset by hand: its file only, the pipeline's others stay
            found[datasets[0]].save(where.advice_file(datasets[0]))
            return
        with staged_dir(where.advice) as staging:
            for dataset, advice in found.items():
                advice.save(staging / f"{dataset}.json")


if __name__ == "__main__":
    run_stage("advise", main)
