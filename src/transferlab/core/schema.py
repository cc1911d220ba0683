"""The schema of every configuration file: params.yaml and each group of conf/.

Structured configs (dataclasses) that OmegaConf merges the YAML onto, so that an unknown
key or a value of the wrong type is an error naming the key, and ``check_*`` functions
for the ranges a type cannot say. Light on purpose: no torch, no Lightning, so that bad
input is reported within a second or two of starting a stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from transferlab.core.errors import ConfigError
from transferlab.core.names import QUADRANTS, REGIMES
from transferlab.models._registry import SOURCES

TUNE_SEARCHES = ("successive_halving", "grid", "off")
# params.yaml keys an experiment may set (its `settings`) where params.yaml leaves them null, and their value
# where neither sets one: the pipeline's own small network, trained here on the source at 32 px.
EXPERIMENT_SETTINGS = {
    "model.name": "small_resnet",
    "pretrain.source": "pipeline",
    "data.image_size": 32,
    "finetune.batch_size": 64,
}
# The recipe keys a search variant may override (a variant is a recipe, not another regime).
VARIANT_KEYS = ("backbone_lr_factor", "head_dropout", "head_hidden", "head_epochs", "plateau_patience", "unfreeze_top")

# --------------------------------------------------------------------------- params.yaml


@dataclass
class Choice:
    """A group option: the file conf/<group>/<name>.yaml."""

    name: str = MISSING


@dataclass
class DataParams:
    image_size: Optional[int] = MISSING  # null: the experiment's settings
    source_train_per_class: Optional[int] = MISSING  # null: all the source has
    small_train_per_class: Optional[int] = MISSING  # null: all the rest (a folder; generated data needs numbers)
    large_train_per_class: Optional[int] = MISSING
    val_per_class: Optional[int] = MISSING
    test_per_class: Optional[int] = MISSING
    on_bad_image: str = MISSING
    max_aspect_ratio: float = MISSING  # a longer side over this many shorter sides is a strip, no example


@dataclass
class AugmentParams:
    copies: int = MISSING


@dataclass
class ModelChoice:
    """params.yaml's ``model``: a file of conf/model/, or null for the experiment's settings."""

    name: Optional[str] = MISSING


@dataclass
class PretrainParams:
    source: Optional[str] = MISSING  # pipeline | imagenet | file; null: the experiment's settings
    weights: Optional[str] = MISSING  # source=file: the weights file
    weights_sha256: Optional[str] = MISSING  # source=file: its sha256 (checked; recorded in dvc.lock)
    epochs: int = MISSING
    lr: float = MISSING
    batch_size: int = MISSING
    weight_decay: float = MISSING


@dataclass
class FinetuneParams:
    batch_size: Optional[int] = MISSING  # null: the experiment's settings
    weight_decay: float = MISSING
    epochs: int = MISSING
    train_per_class: Optional[int] = MISSING


@dataclass
class TuneParams:
    """How each regime's nuisance hyperparameters are chosen before the comparison (training.search)."""

    search: str = MISSING  # successive_halving | grid | off
    seed: int = MISSING  # the search's runs train with this seed (not one of `seeds`)
    min_epochs: int = MISSING  # successive halving's first rung (epochs of the budget's)
    reduction_factor: int = MISSING  # ... and 1 in this many trials goes on at each rung


@dataclass
class CompareParams:
    """The statistical call between regimes (analysis.verdict) and the race for seeds (race stage)."""

    level: float = MISSING  # the call: the leader's interval against a rival excludes 0 at this level
    max_seeds: int = MISSING  # contending regimes get more seeds, up to this many, while the call is a tie


@dataclass
class CutSweepParams:
    quadrants: List[str] = MISSING
    cut_at: List[str] = MISSING


@dataclass
class SizeCurveParams:
    """The data-size curve (size_curve stage): every regime on nested subsets of a target's training split."""

    run: bool = MISSING  # false: the stage writes that it is off (it costs about one comparison's trainable cells)
    quadrants: List[str] = MISSING  # large quadrants: their training split is subsetted
    per_class: List[Optional[int]] = MISSING  # images per class, smallest first; null: every image the comparison used


@dataclass
class EvaluateParams:
    batch_size: int = MISSING
    promote_margin: float = MISSING


@dataclass
class RetrainParams:
    tolerance: float = MISSING


@dataclass
class AdviseParams:
    max_images: int = MISSING
    small_per_class: int = MISSING
    bank: Optional[str] = MISSING  # null: the a-priori rule alone


@dataclass
class Params:
    """params.yaml. ``regime`` holds per-regime settings merged onto conf/regime/<name>.yaml."""

    seed: Optional[int] = MISSING
    seeds: List[int] = MISSING
    budgets: List[int] = MISSING
    regimes: List[str] = MISSING
    experiment: Choice = field(default_factory=Choice)
    datasets: Dict[str, Any] = field(default_factory=dict)  # per conf/dataset file: values set onto it
    data: DataParams = field(default_factory=DataParams)
    augment: AugmentParams = field(default_factory=AugmentParams)
    model: ModelChoice = field(default_factory=ModelChoice)
    trainer: Choice = field(default_factory=Choice)
    pretrain: PretrainParams = field(default_factory=PretrainParams)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)
    tune: TuneParams = field(default_factory=TuneParams)
    compare: CompareParams = field(default_factory=CompareParams)
    regime: Dict[str, Any] = field(default_factory=dict)
    cut_sweep: CutSweepParams = field(default_factory=CutSweepParams)
    size_curve: SizeCurveParams = field(default_factory=SizeCurveParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    retrain: RetrainParams = field(default_factory=RetrainParams)
    advise: AdviseParams = field(default_factory=AdviseParams)


# --------------------------------------------------------------------------- conf/ groups


@dataclass
class SearchConf:
    """A regime's search space: every learning rate, with every named variant (a set of recipe overrides)."""

    lr: List[float] = MISSING
    variants: Optional[Dict[str, Dict[str, Any]]] = None


@dataclass
class RegimeConf:
    """conf/regime/<name>.yaml, after params.yaml's ``regime.<name>`` is merged on (which adds ``lr``, the
    rate used when ``tune.search`` is off)."""

    init: str = MISSING
    cut_at: Optional[str] = MISSING
    freeze_backbone: bool = MISSING
    backbone_lr_factor: float = MISSING
    head_dropout: float = MISSING
    head_hidden: Optional[int] = MISSING
    cache_features: bool = MISSING
    head_epochs: int = MISSING
    plateau_patience: Optional[int] = MISSING
    unfreeze_top: Optional[int] = MISSING
    search: SearchConf = field(default_factory=SearchConf)
    lr: float = MISSING
    name: Optional[str] = None


@dataclass
class TrainerConf:
    """conf/trainer/<name>.yaml: Lightning Trainer arguments plus two module switches."""

    _target_: str = "lightning.pytorch.Trainer"
    name: Optional[str] = None
    accelerator: str = MISSING
    devices: Any = MISSING
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = MISSING
    deterministic: bool = MISSING
    benchmark: Optional[bool] = None
    sync_batchnorm: bool = False
    channels_last: bool = MISSING
    compile: bool = MISSING
    cell_processes: int = 1  # fine-tuning cells trained side by side (CPU only; training.parallel)


@dataclass
class DatasetUse:
    """One dataset entry of an experiment (its source or a target)."""

    dataset: str = MISSING  # a file of conf/dataset/
    classes: Optional[List[str]] = None  # null: every class of the dataset, in its order
    size: Optional[str] = None  # targets: small | large (data.<size>_train_per_class)
    train_per_class: Optional[int] = None  # overrides the size's count for this dataset
    val_per_class: Optional[int] = None  # override data.val_per_class for this dataset
    test_per_class: Optional[int] = None  # override data.test_per_class for this dataset
    test_from: str = "test"  # test: the dataset's test split (or carved from train); val: its val split
    augment: Optional[str] = None  # a file of conf/augment/ (null: the dataset file's `augment`)


@dataclass
class ExperimentConf:
    name: Optional[str] = None
    # Values for the params.yaml keys of EXPERIMENT_SETTINGS that params.yaml leaves null (the network the
    # experiment transfers and the image size and batch it runs at): {key: value}.
    settings: Dict[str, Any] = field(default_factory=dict)
    source: Optional[DatasetUse] = None  # null: no source images (the network's weights come pretrained)
    targets: Dict[str, DatasetUse] = field(default_factory=dict)
    render: Optional[Dict[str, Any]] = None


@dataclass
class TrackingConf:
    experiment_name: str = MISSING


# --------------------------------------------------------------------------- ranges


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def require(where: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{where}={value!r} is not allowed (allowed: {allowed})")


def positive_int(where: str, value: Any, allow_none: bool = False) -> None:
    ok = (value is None and allow_none) or (_is_int(value) and value >= 1)
    require(where, value, ok, ("null or " if allow_none else "") + "an integer >= 1")


def check_weights(pretrain: Any) -> None:
    """``pretrain.source: file`` needs the file and its sha256; the other sources take neither."""
    if pretrain.source != "file":
        for key in ("weights", "weights_sha256"):
            if pretrain[key] is not None:
                raise ConfigError(
                    f"pretrain.{key}={pretrain[key]!r} is set but pretrain.source={pretrain.source} does not read "
                    f"it (allowed: null, or pretrain.source=file)"
                )
        return
    if not pretrain.weights:
        raise ConfigError("pretrain.source=file needs pretrain.weights (allowed: the path of a weights file)")
    digest = pretrain.weights_sha256
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest.lower())):
        raise ConfigError(
            f"pretrain.weights_sha256={digest!r} is not allowed (must be the 64 hex digits of the file's sha256: "
            f"sha256sum {pretrain.weights})"
        )


def check_datasets(datasets: Any, dataset_options: list[str]) -> None:
    """params.yaml's ``datasets``: each entry names a conf/dataset file and maps keys to values."""
    for name, values in datasets.items():
        if name not in dataset_options:
            raise ConfigError(
                f"unknown dataset 'datasets.{name}' in params.yaml (allowed: {', '.join(dataset_options)})"
            )
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"datasets.{name}={values!r} in params.yaml must map keys of conf/dataset/{name}.yaml to values"
            )


def check_params(p: Any, regime_options: list[str], dataset_options: list[str] | None = None) -> None:
    """Ranges and choices of params.yaml that its types cannot express."""
    require("seed", p.seed, p.seed is None or (_is_int(p.seed) and p.seed >= 0), "null or an integer >= 0")
    require(
        "seeds",
        list(p.seeds),
        len(p.seeds) >= 1 and all(_is_int(s) and s >= 0 for s in p.seeds) and len(set(p.seeds)) == len(p.seeds),
        "a non-empty list of distinct integers >= 0",
    )
    require(
        "regimes",
        list(p.regimes),
        len(p.regimes) >= 1 and len(set(p.regimes)) == len(p.regimes) and set(p.regimes) <= set(REGIMES),
        f"a non-empty list of distinct names from {', '.join(REGIMES)}",
    )
    if dataset_options is not None:
        check_datasets(p.datasets, dataset_options)
    unknown = sorted(set(p.regime) - set(regime_options))
    if unknown:
        raise ConfigError(f"unknown key 'regime.{unknown[0]}' in params.yaml (allowed: {', '.join(regime_options)})")
    d = p.data
    positive_int("data.image_size", d.image_size)
    for key in ("source_train_per_class", "small_train_per_class", "large_train_per_class"):
        positive_int(f"data.{key}", d[key], allow_none=True)
    for key in ("val_per_class", "test_per_class"):
        positive_int(f"data.{key}", d[key], allow_none=True)
    require(
        "data.max_aspect_ratio",
        d.max_aspect_ratio,
        isinstance(d.max_aspect_ratio, int | float) and d.max_aspect_ratio >= 1,
        "a number >= 1 (a longer side over this many shorter sides is refused as a strip)",
    )
    require("data.image_size", d.image_size, d.image_size <= 512, "an integer from 1 to 512")
    require("data.on_bad_image", d.on_bad_image, d.on_bad_image in ("fail", "skip"), "fail, skip")
    require("augment.copies", p.augment.copies, 0 <= p.augment.copies <= 64, "an integer from 0 to 64")
    require("pretrain.source", p.pretrain.source, p.pretrain.source in SOURCES, ", ".join(SOURCES))
    check_weights(p.pretrain)
    for section in ("pretrain", "finetune"):
        s = p[section]
        positive_int(f"{section}.batch_size", s.batch_size)
        require(f"{section}.weight_decay", s.weight_decay, s.weight_decay >= 0, "a number >= 0")
    positive_int("pretrain.epochs", p.pretrain.epochs)
    require("pretrain.lr", p.pretrain.lr, p.pretrain.lr > 0, "a number > 0")
    require(
        "budgets",
        list(p.budgets),
        len(p.budgets) >= 1
        and all(_is_int(b) and b >= 1 for b in p.budgets)
        and list(p.budgets) == sorted(set(p.budgets)),
        "a non-empty list of distinct increasing integers >= 1 (optimizer steps per run)",
    )
    positive_int("finetune.epochs", p.finetune.epochs)
    require(
        "finetune.epochs",
        p.finetune.epochs,
        p.finetune.epochs <= min(p.budgets),
        f"1..{min(p.budgets)}, the smallest budget: each epoch is at least one optimizer step",
    )
    t = p.tune
    require("tune.search", t.search, t.search in TUNE_SEARCHES, ", ".join(TUNE_SEARCHES))
    require(
        "tune.seed",
        t.seed,
        _is_int(t.seed) and t.seed >= 0 and t.seed not in list(p.seeds),
        f"an integer >= 0 that is not one of seeds {list(p.seeds)} (the comparison's runs must not be the "
        f"ones the choice was made on)",
    )
    require(
        "tune.min_epochs",
        t.min_epochs,
        _is_int(t.min_epochs) and 1 <= t.min_epochs <= p.finetune.epochs,
        f"1..finetune.epochs ({p.finetune.epochs})",
    )
    require(
        "tune.reduction_factor",
        t.reduction_factor,
        _is_int(t.reduction_factor) and t.reduction_factor >= 2,
        "an integer >= 2",
    )
    c = p.compare
    require("compare.level", c.level, 0.5 <= c.level < 1, "a number in [0.5, 1)")
    require(
        "compare.max_seeds",
        c.max_seeds,
        _is_int(c.max_seeds) and c.max_seeds >= len(p.seeds),
        f"an integer >= the number of seeds ({len(p.seeds)})",
    )
    positive_int("finetune.train_per_class", p.finetune.train_per_class, allow_none=True)
    for q in p.cut_sweep.quadrants:
        require("cut_sweep.quadrants", list(p.cut_sweep.quadrants), q in QUADRANTS, ", ".join(QUADRANTS))
    check_size_curve(p.size_curve)
    positive_int("evaluate.batch_size", p.evaluate.batch_size)
    margin = p.evaluate.promote_margin
    require(
        "evaluate.promote_margin",
        margin,
        0 <= margin < 1,
        "a number in [0, 1): test accuracy the challenger must gain over the champion",
    )
    require("retrain.tolerance", p.retrain.tolerance, 0 <= p.retrain.tolerance < 1, "a number in [0, 1)")
    positive_int("advise.max_images", p.advise.max_images)
    positive_int("advise.small_per_class", p.advise.small_per_class)


def check_size_curve(curve: Any) -> None:
    """Distinct quadrants; sizes that grow (integers >= 1, at most one null, last: the full split)."""
    quadrants = list(curve.quadrants)
    require(
        "size_curve.quadrants",
        quadrants,
        len(quadrants) >= 1 and len(set(quadrants)) == len(quadrants) and set(quadrants) <= set(QUADRANTS),
        f"a non-empty list of distinct names from {', '.join(QUADRANTS)}",
    )
    sizes = list(curve.per_class)
    numbers = [n for n in sizes if n is not None]
    ok = (
        len(sizes) >= 2
        and all(_is_int(n) and n >= 1 for n in numbers)
        and numbers == sorted(set(numbers))
        and sizes.count(None) <= 1
        and (None not in sizes or sizes[-1] is None)
    )
    require(
        "size_curve.per_class", sizes, ok, "two or more increasing integers >= 1, optionally ending with null (all)"
    )


def check_regime(name: str, r: Any) -> None:
    where = f"regime.{name}"
    require(f"{where}.init", r.init, r.init in ("pretrained", "random"), "pretrained, random")
    require(f"{where}.lr", r.lr, r.lr > 0, "a number > 0")
    require(f"{where}.head_dropout", r.head_dropout, 0 <= r.head_dropout < 1, "a number in [0, 1)")
    positive_int(f"{where}.head_hidden", r.head_hidden, allow_none=True)
    require(f"{where}.head_epochs", r.head_epochs, _is_int(r.head_epochs) and r.head_epochs >= 0, "an integer >= 0")
    positive_int(f"{where}.plateau_patience", r.plateau_patience, allow_none=True)
    positive_int(f"{where}.unfreeze_top", r.unfreeze_top, allow_none=True)
    if not r.freeze_backbone:
        require(f"{where}.backbone_lr_factor", r.backbone_lr_factor, r.backbone_lr_factor > 0, "a number > 0")
        require(
            f"{where}.cache_features",
            r.cache_features,
            not r.cache_features,
            "false: only a frozen backbone (freeze_backbone: true) has features to cache",
        )
    elif r.head_epochs:
        require(f"{where}.head_epochs", r.head_epochs, False, "0 for a frozen backbone: there is no second phase")
    search = r.get("search")
    if search is None:
        return
    lrs = list(search.lr)
    require(
        f"{where}.search.lr",
        lrs,
        len(lrs) >= 1 and all(v > 0 for v in lrs) and len(set(lrs)) == len(lrs),
        "a non-empty list of distinct learning rates > 0",
    )
    for variant, overrides in (search.variants or {}).items():
        unknown = sorted(set(overrides) - set(VARIANT_KEYS))
        if unknown:
            raise ConfigError(
                f"unknown key '{where}.search.variants.{variant}.{unknown[0]}' (allowed: {', '.join(VARIANT_KEYS)})"
            )
        check_regime(f"{name}.search.variants.{variant}", variant_recipe(r, overrides))


def variant_recipe(r: Any, overrides: Any) -> Any:
    """A regime's settings with a search variant's overrides applied (no search of its own)."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge({k: v for k, v in r.items() if k != "search"}, overrides)
    OmegaConf.set_struct(merged, False)
    OmegaConf.update(merged, "search", None, force_add=True)
    return merged


def model_stage_names(model: Any) -> list[str]:
    """A model's stage names, from its family in the model registry (built once per process where the
    family does not name its stages from its arguments: torch is imported then, ~3 s for timm's)."""
    from transferlab.models._registry import family_of, model_args

    return family_of(model).stage_names(model_args(model))


def check_pretrain_source(cfg: Any) -> None:
    """``pretrain.source`` must be one the model's family supports (its registry entry says which), and
    ``pipeline`` needs source images to train on."""
    from transferlab.models._registry import family_of

    family = family_of(cfg.model)
    source = cfg.pretrain.source
    if source == "pipeline" and cfg.experiment.source is None:
        raise ConfigError(
            f"pretrain.source=pipeline trains on the experiment's source images, and experiment "
            f"{cfg.experiment.name} has none (allowed: imagenet, e.g. model=efficientnet_lite0, or file)"
        )
    if source not in family.sources:
        offer = " or ".join(f.factory for f in _families_with(source))
        raise ConfigError(
            f"pretrain.source={source} is not available for model={cfg.model.name} (allowed: "
            f"{', '.join(family.sources)}; {source} needs a model of the {offer} family, e.g. model=efficientnet_lite0)"
        )


def _families_with(source: str) -> list[Any]:
    from transferlab.models._registry import families

    return [f for f in families().values() if source in f.sources]


def check_cut_points(cfg: Any) -> None:
    """Every regime's cut_at and the cut sweep's cut points must be stages of the model."""
    names = model_stage_names(cfg.model)
    wanted = [(f"regime.{name}.cut_at", cfg.regime[name].cut_at) for name in cfg.regime]
    wanted += [("cut_sweep.cut_at", cut) for cut in cfg.cut_sweep.cut_at]
    for where, cut in wanted:
        if cut is not None and cut not in names:
            raise ConfigError(f"{where}={cut!r} is not a stage of model {cfg.model.name} (allowed: {', '.join(names)})")


def check_phases(cfg: Any) -> None:
    """Two-phase settings that must fit the budget and the network: phase 1 ends before the last epoch, and
    ``unfreeze_top`` counts stages the regime keeps (each search variant too)."""
    names = model_stage_names(cfg.model)
    epochs = cfg.finetune.epochs
    for name in cfg.regime:
        regime = cfg.regime[name]
        variants = regime.search.variants or {}
        checked = [(f"regime.{name}", regime)]
        checked += [(f"regime.{name}.search.variants.{v}", variant_recipe(regime, o)) for v, o in variants.items()]
        for where, r in checked:
            kept = names[: names.index(r.cut_at) + 1] if r.cut_at in names else names
            require(
                f"{where}.head_epochs",
                r.head_epochs,
                r.head_epochs < epochs,
                f"0..{epochs - 1}: fewer than finetune.epochs ({epochs})",
            )
            if r.unfreeze_top is not None:
                require(
                    f"{where}.unfreeze_top",
                    r.unfreeze_top,
                    r.unfreeze_top <= len(kept),
                    f"null or 1..{len(kept)}, the stages kept",
                )


def check_experiment(experiment: Any) -> None:
    """The experiment names a dataset for each quadrant, with a size, and where its test split comes from."""
    where = f"experiment {experiment.name}" if experiment.name else "experiment"
    unknown = sorted(set(experiment.targets) - set(QUADRANTS))
    if unknown:
        raise ConfigError(f"unknown key 'experiment.targets.{unknown[0]}' (allowed: {', '.join(QUADRANTS)})")
    for quadrant in QUADRANTS:
        if quadrant not in experiment.targets:
            raise ConfigError(f"{where} has no targets.{quadrant} (see conf/experiment/builtin.yaml)")
        use = experiment.targets[quadrant]
        require(f"experiment.targets.{quadrant}.size", use.size, use.size in ("small", "large"), "small, large")
    uses = [("source", experiment.source)] if experiment.source is not None else []
    for key, use in (*uses, *((f"targets.{q}", experiment.targets[q]) for q in QUADRANTS)):
        require(f"experiment.{key}.test_from", use.test_from, use.test_from in ("test", "val"), "test, val")
        for count in ("train_per_class", "val_per_class", "test_per_class"):
            positive_int(f"experiment.{key}.{count}", use[count], allow_none=True)


def check_trainer(trainer) -> None:
    """Side-by-side cells (``cell_processes``) are for one CPU machine: a GPU or DDP trainer has its own
    parallelism, and two processes would share one device."""
    processes = trainer.cell_processes
    single_cpu = trainer.accelerator == "cpu" and "ddp" not in str(trainer.strategy) and trainer.num_nodes == 1
    if processes < 1 or (processes > 1 and not single_cpu):
        allowed = "1 or more" if single_cpu else "1, since this trainer is not single-node CPU without DDP"
        raise ConfigError(f"trainer {trainer.name}: cell_processes={processes} is not allowed (allowed: {allowed})")
