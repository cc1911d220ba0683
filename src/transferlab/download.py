"""Stage `download`: get the experiment's five datasets and prepare them under data/raw/.

The experiment (conf/experiment/<experiment.name>.yaml) names the source dataset and the
four targets; each names a dataset of conf/dataset/ (built-in generated data, a
torchvision dataset, scikit-learn's digits, an image folder or an archive; see
transferlab.datasets.sources), the classes to use and the images per class. Order of work, so
that bad input fails early:

1. check the experiment and build every source (no I/O);
2. fetch every dataset into data/downloads/<dataset>/ (a cache DVC does not own; offline,
   a dataset that must be downloaded fails here with one line);
3. prepare each into a staging folder (transferlab.datasets.prepare: scan and hash every file, check
   content, decode only the images kept), which replaces data/raw only when all five succeeded: a
   failed run leaves no half-written dataset.

Output per dataset: data/raw/<name>/{x,y}_{train,val,test}.npy, manifest.csv, card.json.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from transferlab.core.artifacts import DatasetCard
from transferlab.core.config import check_option, dataset_file, load_config, project_root, save_config
from transferlab.core.errors import ConfigError
from transferlab.core.files import staged_dir
from transferlab.core.names import DATASETS, QUADRANTS, SPLITS
from transferlab.core.paths import ProjectPaths
from transferlab.core.preflight import prepared
from transferlab.core.schema import DatasetUse
from transferlab.core.stage import run_stage
from transferlab.datasets import near_copies, prepare
from transferlab.datasets.sources import GeneratedSource, shown

SPLIT_SEED = {"train": 0, "val": 1, "test": 2}


@dataclass
class Plan:
    name: str  # source, or the quadrant
    use: DatasetUse
    counts: dict[str, int | None]  # images per class for train / val / test (None: all the rest)


def plans(cfg: DictConfig) -> list[Plan]:
    """The datasets to prepare (the source, when the experiment has one, and the four targets), with their
    counts per class (the experiment was checked with the config: core.schema.check_experiment)."""
    data = cfg.data

    def held_out(use: DatasetUse) -> dict:
        return {"val": use.val_per_class or data.val_per_class, "test": use.test_per_class or data.test_per_class}

    out = []
    if cfg.experiment.source is not None:  # None: no source images (the network comes pretrained)
        source = cast(DatasetUse, OmegaConf.to_object(cfg.experiment.source))
        train = source.train_per_class or data.source_train_per_class
        out.append(Plan("source", source, {"train": train, **held_out(source)}))
    for quadrant in QUADRANTS:
        use = cast(DatasetUse, OmegaConf.to_object(cfg.experiment.targets[quadrant]))
        train = use.train_per_class or data[f"{use.size}_train_per_class"]
        out.append(Plan(quadrant, use, {"train": train, **held_out(use)}))
    return out


def build_sources(cfg: DictConfig, root: Path, names: list[str]) -> dict:
    """Instantiate each named conf/dataset file, with params.yaml's ``datasets.<name>`` set onto it; the
    resolved config is kept in cfg.datasets."""
    files = {}
    for name in names:
        check_option(root, "dataset", name)
        found = dataset_file(root, cfg, name)
        found.pop("augment", None)  # the augment stage's
        files[name] = found
    cfg.datasets = files
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"conf/dataset: {str(err).splitlines()[0]}") from None
    sources = {}
    for name in names:
        missing = OmegaConf.missing_keys(cfg.datasets[name])
        if missing:
            raise ConfigError(
                f"conf/dataset/{name}.yaml: {', '.join(sorted(missing))} not set (it is ???): set it with "
                f"`dvc exp run -S datasets.{name}.{sorted(missing)[0]}=...`, in params.yaml's datasets, or in the file"
            )
        try:
            sources[name] = instantiate(cfg.datasets[name], _convert_="all")
        except InstantiationException as err:
            cause = err.__cause__
            if isinstance(cause, ConfigError):
                raise ConfigError(f"dataset {name}: {cause}") from None
            raise ConfigError(f"conf/dataset/{name}.yaml: {str(err).strip().splitlines()[0]}") from None
    return sources


def check_source_is_not_a_target(todo: list[Plan], sources: dict) -> None:
    """The source and a target that are one folder under two dataset names: every target image would be a
    source image, each reported as an overlap (1,352 lines on a real folder) without saying why."""

    def folder(plan: Plan) -> str | None:
        root = getattr(sources[plan.use.dataset], "root", None)
        return os.path.realpath(root) if root else None

    source = next((plan for plan in todo if plan.name == "source"), None)
    if source is None or folder(source) is None:
        return
    for plan in todo:
        if plan is not source and plan.use.dataset != source.use.dataset and folder(plan) == folder(source):
            raise ConfigError(
                f"the source ({source.use.dataset}) and target {plan.name} ({plan.use.dataset}) are the same folder "
                f"{shown(str(folder(source)))}: pretraining on it would see the target's test images (point one "
                f"of them at another folder)"
            )


def check_classes(plan: Plan, source) -> list[str] | None:
    """The plan's classes, checked against the source's when it knows them before fetching."""
    known = getattr(source, "classes", None)
    chosen = plan.use.classes if plan.use.classes is not None else known
    if chosen is not None and len(chosen) < 2:
        raise ConfigError(f"experiment {plan.name}: {len(chosen)} class(es) {list(chosen)} (need 2 or more)")
    if chosen is not None and len(set(chosen)) != len(chosen):
        raise ConfigError(f"experiment {plan.name}: classes {list(chosen)} name a class twice")
    if known is not None and chosen is not None:
        unknown = [c for c in chosen if c not in known]
        if unknown:
            shown = ", ".join(known[:30]) + (f", ... ({len(known)} in all)" if len(known) > 30 else "")
            raise ConfigError(
                f"experiment {plan.name}: unknown classes {unknown} for dataset {plan.use.dataset} (allowed: {shown})"
            )
    return list(chosen) if chosen is not None else None


def prepare_generated(
    cfg: DictConfig, plan: Plan, source: GeneratedSource, folder: Path, pool, scans, held_out: dict[str, str]
) -> dict:
    """Render one dataset. Generated images are never a folder's or another generator's bytes, so
    ``held_out`` (a target's val/test sha256s, for the source) cannot match and is not checked."""
    for split in SPLITS:
        if plan.counts[split] is None:
            raise ConfigError(f"{plan.name}: generated data needs a number of images per class for {split} (got null)")
    classes = check_classes(plan, source)
    assert classes is not None  # a generated source knows its classes
    folder.mkdir(parents=True)
    manifest = []
    for split in SPLITS:  # classes render in parallel in the pool
        seed_words = [cfg.seed or 0, DATASETS.index(plan.name), SPLIT_SEED[split]]
        x, y = source.generate(classes, int(plan.counts[split] or 0), seed_words, cfg.data.image_size, pool)
        prepare.write_arrays(folder, split, x, y, np.arange(len(y)))
        manifest += [
            {
                "file": f"generated:{split}[{i}]",
                "sha256": hashlib.sha256(x[i].tobytes()).hexdigest(),
                "label": classes[int(y[i])],
                "split": split,
                "index": i,
                "left_out": "",
            }
            for i in range(len(y))
        ]
    prepare.write_manifest(folder, manifest)
    return {"classes": classes, "extra": {"left_out": 0, "ignored_files": 0}}


def split_sources(plan: Plan, source) -> dict[str, str]:
    """Which split of the source each prepared split is drawn from: its own, else carved out of train;
    with `test_from: val`, test is the source's val split and val is carved out of train."""
    draws_from = {split: split if split in source.splits else "train" for split in SPLITS}
    if plan.use.test_from == "val":
        if "val" not in source.splits or "test" in source.splits:
            raise ConfigError(
                f"experiment.{plan.name}.test_from=val needs a dataset with a val split and no test "
                f"split ({plan.use.dataset} has {', '.join(source.splits)})"
            )
        draws_from.update(test="val", val="train")
    return draws_from


def shortfall(plan: Plan, classes: list[str], src: str, draws_from: dict[str, str], near_left_out=None):
    """The 'too few images' message for a class of source split ``src``: what was asked, from where, and the
    ways out. ``near_left_out(cls)``: how many of the class's images were left out as near-copies so far."""

    def describe(cls: int, usable: int, fixed: list[str], open_ended: list[str]) -> str:
        near = near_left_out(cls) if near_left_out is not None else 0
        copies = f" ({near} more were left out as near-copies of other splits' images)" if near else ""
        asked = " + ".join(f"{plan.counts[s]} ({s})" for s in fixed)
        asked += f" + at least 1 ({open_ended[0]})" if open_ended else ""
        carved = [s for s, f in draws_from.items() if f == src and s != src]
        why = (
            (
                f"; {' and '.join(carved)} {'is' if len(carved) == 1 else 'are'} carved out of split {src} because "
                f"{plan.use.dataset} has no {' or '.join(carved)} split of its own"
            )
            if carved
            else ""
        )
        return (
            f"{plan.name}: class {classes[cls]!r} has {usable} usable images in split {src} of {plan.use.dataset}"
            f"{copies}, asked for {asked}{why}. Lower data.*_per_class, set train_per_class / val_per_class / "
            f"test_per_class on experiment.{plan.name}, or (for a folder with val/ but no test/) test_from: val"
        )

    return describe


def prepare_real(
    cfg: DictConfig, plan: Plan, source, folder: Path, pool, scans: prepare.Scans, held_out: dict[str, str]
) -> dict:
    """Scan, check, pick, decode (only what is kept) and write one dataset from a source of real images.
    ``held_out`` (sha256 -> where) are the targets' val and test images, which the source must not hold."""
    where, policy, size = plan.name, cfg.data.on_bad_image, cfg.data.image_size
    draws_from = split_sources(plan, source)
    scanned = {src: scans.get(plan.use.dataset, source, src) for src in dict.fromkeys(draws_from.values())}
    all_classes = scanned["train"].raw.classes
    for src, found in scanned.items():
        if found.raw.classes != all_classes:
            raise ConfigError(
                f"{where}: split {src} has classes {found.raw.classes[:10]}..., train has {all_classes[:10]}..."
            )
    source.classes = all_classes
    classes = check_classes(plan, source)
    assert classes is not None  # known from the scan
    class_map = np.full(len(all_classes), -1, dtype=np.int64)
    class_map[[all_classes.index(c) for c in classes]] = np.arange(len(classes))
    chosen = {src: np.flatnonzero(class_map[found.labels] >= 0) for src, found in scanned.items()}

    problems = [
        prepare.Problem("bad", src, i, reason)
        for src, found in scanned.items()
        for i, reason in found.unreadable.items()
        if class_map[found.labels[i]] >= 0
    ]
    problems += prepare.content_problems(scanned, chosen, all_classes, draws_from)
    problems += prepare.overlap_problems(scanned, chosen, held_out)
    if problems and policy == "fail":
        order = {"conflict": 0, "bad": 1, "duplicate": 2, "leakage": 3, "overlap": 4}
        raise prepare.problem_error(where, sorted(problems, key=lambda p: order[p.kind]), scanned)
    left_out = {(p.source, p.index): p.reason for p in problems}

    hashed = near_copies.HashCache()
    picks: dict[str, prepare.Picked] = {}

    def near_left_out(src: str):
        def count(cls: int) -> int:
            return sum(
                1
                for (s, i), reason in left_out.items()
                if s == src and reason.startswith("near copy") and class_map[scanned[src].labels[i]] == cls
            )

        return count

    # Leaving a near-copy out lets the next image of the seeded order in, which may be a near-copy too: pick
    # again until none is left. Each round leaves at least one more candidate out, so it ends (at the latest
    # with the one-line "too few usable images"); a round decodes and hashes only images new to it (the
    # Brain Tumor MRI folder of docs/data.md: about 0.4 s a round).
    while True:
        picks = {
            src: prepare.pick_and_decode(
                found,
                np.asarray([i for i in chosen[src] if (src, int(i)) not in left_out], dtype=np.int64),
                class_map,
                {split: plan.counts[split] for split in SPLITS if draws_from[split] == src},
                [cfg.seed or 0, DATASETS.index(plan.name), SPLIT_SEED[src]],
                size,
                policy,
                pool,
                where,
                shortfall(plan, classes, src, draws_from, near_left_out(src)),
                picks.get(src),
                float(cfg.data.max_aspect_ratio),
            )
            for src, found in scanned.items()
        }
        placed = {
            split: [(src, i) for src, picked in picks.items() for i in picked.rows.get(split, [])] for split in SPLITS
        }
        leaks, reported = near_copy_leaks(placed, picks, scanned, hashed)
        if not leaks:
            break
        if policy == "fail":
            raise prepare.problem_error(where, leaks, scanned)
        left_out.update({(p.source, p.index): p.reason for p in leaks})

    folder.mkdir(parents=True)
    manifest: list[dict] = []
    images: dict[str, list[np.ndarray]] = {split: [] for split in SPLITS}
    labels: dict[str, list[int]] = {split: [] for split in SPLITS}
    at: dict[tuple[str, int], tuple[str, int]] = {}
    for split in SPLITS:
        for row, (src, i) in enumerate(placed[split]):
            images[split].append(picks[src].images[i])
            labels[split].append(int(class_map[scanned[src].labels[i]]))
            at[src, i] = (split, row)
    for src, found in scanned.items():
        left_out.update({(src, i): reason for i, reason in picks[src].bad.items()})
        for position in chosen[src]:
            i = int(position)
            in_split, at_row = at.get((src, i), ("", ""))
            manifest.append(
                {
                    "file": found.keys[i],
                    "sha256": found.digests[i],
                    "phash": phash_text(picks[src].images[i], (src, i), hashed) if in_split else "",
                    "label": all_classes[int(found.labels[i])],
                    "split": in_split,
                    "index": at_row,
                    "left_out": left_out.get((src, i), "" if in_split else "not picked"),
                    "near_copy": reported.get((src, i), ""),
                }
            )
    for split in SPLITS:
        prepare.write_split(folder, split, images[split], np.asarray(labels[split], dtype=np.int64), size)
    for found in scanned.values():  # dangling and looping links: named, never silently gone
        manifest += [
            {"file": shown(key), "sha256": "", "label": "", "split": "", "index": "", "left_out": reason}
            for key, reason in found.raw.unusable or []
        ]
    prepare.write_manifest(folder, manifest)
    ignored = sum(found.raw.ignored + len(found.raw.unusable or []) for found in scanned.values())
    skipped = sum(1 for row in manifest if row["sha256"] and row["left_out"] and row["left_out"] != "not picked")
    near = sum(1 for row in manifest if row["left_out"].startswith("near copy"))
    return {
        "classes": classes,
        "extra": {
            "left_out": skipped,
            "ignored_files": ignored,
            "near_copies": near,
            "splits_drawn_from": draws_from,
            "test_from": plan.use.test_from,
        },
    }


def phash_text(image: np.ndarray, member: tuple[str, int], hashed: near_copies.HashCache) -> str:
    """The manifest's ``phash``: 16 hex digits, or "" for a featureless image (not compared)."""
    return "" if near_copies.featureless(image) else near_copies.to_hex(hashed.plain(image, member))


def near_copy_leaks(
    placed: dict[str, list[tuple[str, int]]], picks: dict, scanned: dict, hashed: near_copies.HashCache
) -> tuple[list[prepare.Problem], dict[tuple[str, int], str]]:
    """Near-copies among one dataset's picked images. Across splits they are leakage: the evaluation side
    (test, then val) keeps its image and the other one is a problem. Within a split they are reported
    (``near_copy`` in the manifest: an augmented training set is made of them), not refused."""
    order = sorted(SPLITS, key=lambda s: prepare.EVALUATION_FIRST[s])

    def key(member: tuple[str, int]) -> str:
        return scanned[member[0]].keys[member[1]]

    def image(member: tuple[str, int]) -> np.ndarray:
        return picks[member[0]].images[member[1]]

    placed = {s: [m for m in members if not near_copies.featureless(image(m))] for s, members in placed.items()}
    plain = {s: np.asarray([hashed.plain(image(m), m) for m in placed[s]], np.uint64) for s in SPLITS}
    pictures = {s: [image(m) for m in placed[s]] for s in SPLITS}
    problems: list[prepare.Problem] = []
    reported: dict[tuple[str, int], str] = {}
    dropped: set[tuple[str, int]] = set()
    for n, first in enumerate(order[:-1]):
        variants = hashed.variants(pictures[first], placed[first])
        for later in order[n + 1 :]:
            candidates = near_copies.near_pairs(variants, plain[later])
            for pair in near_copies.confirm(candidates, pictures[first], pictures[later]):
                member = placed[later][pair.reference]
                if member not in dropped:
                    dropped.add(member)
                    problems.append(
                        prepare.Problem(
                            "near_copy",
                            member[0],
                            member[1],
                            f"near copy: {pair.distance} bits, {pair.grey} grey levels from "
                            f"{key(placed[first][pair.query])} in split {first}",
                        )
                    )
    for split in SPLITS:
        members = placed[split]
        candidates = near_copies.near_pairs(hashed.variants(pictures[split], members), plain[split], same_set=True)
        for pair in near_copies.confirm(candidates, pictures[split], pictures[split]):
            a, b = members[pair.query], members[pair.reference]
            how = f"{pair.distance} bits, {pair.grey} grey levels"
            reported.setdefault(a, f"{how} from {key(b)} (same split, kept)")
            reported.setdefault(b, f"{how} from {key(a)} (same split, kept)")
    return problems, reported


def prepare_one(cfg: DictConfig, plan: Plan, source, staging: Path, pool, scans, held_out: dict[str, str]) -> dict:
    make = prepare_generated if isinstance(source, GeneratedSource) else prepare_real
    return make(cfg, plan, source, staging / plan.name, pool, scans, held_out)


def check_source_holds_no_evaluation_image(cfg, todo, source_plan, sources, staging, pool, scans, made_by) -> None:
    """The targets' val and test images, and near-copies of them, must not be source images: if any is, the
    source is prepared again with them as problems (fail: stop, naming them; skip: others take their
    place, which are checked in turn)."""
    held_out: dict[str, str] = {}
    targets = [plan.name for plan in todo if plan is not source_plan]
    for name in targets:
        held_out.update(prepare.evaluation_digests(name, staging / name))
    again = any(row["sha256"] in held_out for row in prepare.read_manifest(staging / "source"))
    while True:  # each round holds out at least one more source file: it ends
        near = {k: v for k, v in prepare.near_copies_in_source(staging, targets).items() if k not in held_out}
        if not (again or near):
            return  # the common case: one manifest read and one comparison of hashes
        held_out.update(near)
        shutil.rmtree(staging / "source")
        source = sources[source_plan.use.dataset]
        made_by["source"] = prepare_one(cfg, source_plan, source, staging, pool, scans, held_out)
        again = False  # the exact copies are left out now; the new picks may hold other near-copies


def no_source_card(cfg: DictConfig) -> DatasetCard:
    """data/raw/source/card.json of an experiment without source images: no classes, no images, and why
    (the stages that read the source see at once that there is none)."""
    return DatasetCard(
        name="source",
        classes=[],
        image_size=cfg.data.image_size,
        counts={split: 0 for split in SPLITS},
        counts_per_class={split: {} for split in SPLITS},
        sha256={},
        source={
            "dataset": None,
            "kind": "none",
            "why": f"experiment {cfg.experiment.name} has no source images: the network is {cfg.model.name} with "
            f"pretrain.source={cfg.pretrain.source}",
        },
        resize="-",
        seed=cfg.seed,
        on_bad_image=cfg.data.on_bad_image,
        left_out=0,
        ignored_files=0,
    )


def report_train_overlaps(staging: Path, raw: Path) -> None:
    """overlap.csv, only when some target training image is also a source training image."""
    rows = prepare.train_overlaps(staging, list(QUADRANTS))
    if not rows:
        return
    prepare.write_overlaps(staging / "overlap.csv", rows)
    counts = ", ".join(f"{q} {n}" for q in QUADRANTS if (n := sum(r["target"] == q for r in rows)))
    print(
        f"download: {len(rows)} target training images are also source training images ({counts}; "
        f"the files: {raw / 'overlap.csv'}): the pretrained network has seen them"
    )


def check_sizes(cfg: DictConfig, todo: list[Plan], sources: dict, raw: Path) -> None:
    """Generated data is made to the asked counts: refuse counts the disk or the memory cannot hold,
    before generating anything (real data is bounded by the images it has, checked when picking)."""
    pixels = cfg.data.image_size**2 * 3
    total, largest, where = 0, 0, ""
    for plan in todo:
        source = sources[plan.use.dataset]
        if not isinstance(source, GeneratedSource):
            continue
        classes = len(plan.use.classes or source.classes)
        for split in SPLITS:
            size = (plan.counts[split] or 0) * classes * pixels
            total += size
            if size > largest:
                largest, where = size, f"{plan.name} {split}"
    probe = raw
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    gb = 1 << 30
    if total > free:
        raise ConfigError(
            f"the data.*_per_class counts would need {total / gb:.1f} GB for data/raw, {free / gb:.1f} GB "
            f"are free: lower them"
        )
    if largest > memory / 2:
        raise ConfigError(
            f"the data.*_per_class counts would need {largest / gb:.1f} GB of memory for {where}, "
            f"{memory / gb:.1f} GB are available: lower them"
        )


def main(argv: list[str]) -> None:
    cfg = load_config("download", argv)
    root = project_root()
    todo = plans(cfg)
    sources = build_sources(cfg, root, list(dict.fromkeys(plan.use.dataset for plan in todo)))
    check_source_is_not_a_target(todo, sources)
    for plan in todo:
        if isinstance(sources[plan.use.dataset], GeneratedSource) or plan.use.classes is not None:
            check_classes(plan, sources[plan.use.dataset])
    where = ProjectPaths.of(cfg)
    check_sizes(cfg, todo, sources, where.raw)
    raw = where.raw
    with prepared("download", {}, [raw]):
        # Under `dvc exp run --queue` the stage runs in a temporary copy: keep the download cache in the real
        # repository.
        downloads = Path(os.environ.get("DVC_ROOT", root)) / cfg.paths.downloads
        for name, source in sources.items():
            source.fetch(downloads / name)
        with staged_dir(raw) as staging, prepare.worker_pool() as pool:  # data/raw: replaced only if all five succeed
            scans = prepare.Scans(pool)
            made_by = {}
            for plan in todo:
                made_by[plan.name] = prepare_one(cfg, plan, sources[plan.use.dataset], staging, pool, scans, {})
            source_plan = next((plan for plan in todo if plan.name == "source"), None)
            if source_plan is not None:
                check_source_holds_no_evaluation_image(cfg, todo, source_plan, sources, staging, pool, scans, made_by)
            for plan in todo:
                source, folder, made = sources[plan.use.dataset], staging / plan.name, made_by[plan.name]
                info = prepare.card(
                    folder,
                    plan.name,
                    made["classes"],
                    {"dataset": plan.use.dataset, **source.describe()},
                    cfg.data.image_size,
                    {"seed": cfg.seed, "on_bad_image": cfg.data.on_bad_image, **made["extra"]},
                )
                info.save(folder / "card.json")
                counts = "/".join(str(info.counts[s]) for s in SPLITS)
                print(
                    f"{plan.name}: {plan.use.dataset}, {len(made['classes'])} classes, train/val/test images = "
                    f"{counts}"
                    + (f", {info.left_out} left out (see {raw / plan.name / 'manifest.csv'})" if info.left_out else "")
                )
            if source_plan is None:
                (staging / "source").mkdir()
                no_source_card(cfg).save(staging / "source" / "card.json")
                print(f"source: none (pretrain.source={cfg.pretrain.source}: {cfg.model.name}'s own weights)")
            else:
                report_train_overlaps(staging, raw)
            save_config(cfg, staging / "config.yaml")


if __name__ == "__main__":
    run_stage("download", main)
