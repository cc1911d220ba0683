"""One configuration for every stage: Hydra composes ``conf/``, ``params.yaml`` goes on top.

``conf/`` defines what each option *is* (a model's architecture, a regime's freezing, the
augmentation pipeline); ``params.yaml`` holds the experiment knobs DVC tracks, including
which option of each group is used (``<group>.name``). Command-line ``key=value``
arguments (Hydra's override grammar) go last: keys that exist in ``params.yaml`` are
applied there (so they can switch a group or a quadrant's regime), any other key must
exist in the composed config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

QUADRANTS = ("small_similar", "small_different", "large_similar", "large_different")
DATASETS = ("source", *QUADRANTS)
# Groups chosen in params.yaml by `<group>.name`; `regime` is chosen per quadrant.
GROUPS = ("experiment", "model", "augment", "trainer")
STAGES = ("download", "augment", "pretrain", "finetune", "evaluate", "regime_matrix", "cut_sweep", "report")
# Stages that train one quadrant (quadrant=<name> required); the matrix stages pick its regime too.
QUADRANT_STAGES = ("finetune", "evaluate", "regime_matrix", "cut_sweep")
MATRIX_STAGES = ("regime_matrix", "cut_sweep")
# Keys of a params.yaml quadrant entry that are not merged onto the regime's config.
QUADRANT_TRAIN_KEYS = ("regime", "epochs", "lr")


class ConfigError(ValueError):
    """Bad user input, reported as one line before any expensive work starts."""


@dataclass
class TrainKnobs:
    """Typed schema of one training stage's knobs (merged over its params.yaml values)."""

    epochs: int = MISSING
    lr: float = MISSING
    batch_size: int = MISSING
    weight_decay: float = 0.0
    train_per_class: Optional[int] = None


def project_root(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` (default: cwd) with params.yaml and conf/."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "params.yaml").is_file() and (candidate / "conf").is_dir():
            return candidate
    raise ConfigError(f"no params.yaml with a conf/ folder at or above {here} (run from the project root)")


def options(root: Path, group: str) -> list[str]:
    """The option names of a config group: the files conf/<group>/*.yaml."""
    return sorted(p.stem for p in (root / "conf" / group).glob("*.yaml"))


def check_option(root: Path, group: str, choice: Any) -> str:
    allowed = options(root, group)
    if choice not in allowed:
        raise ConfigError(f"unknown {group} {choice!r} (allowed: {', '.join(allowed)})")
    return str(choice)


def _parse_overrides(argv: list[str]) -> list[tuple[str, Any]]:
    try:
        parsed = OverridesParser.create().parse_overrides(list(argv))
    except Exception as err:  # Hydra raises OverrideParseException with a multi-line text
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"cannot parse arguments {' '.join(argv)!r}: {first} (expected key=value)") from None
    pairs = []
    for override in parsed:
        if override.is_delete() or override.is_add() or override.is_force_add():
            raise ConfigError(f"override {override.input_line!r} is not supported (use plain key=value)")
        if override.is_sweep_override():
            raise ConfigError(f"override {override.input_line!r} is a sweep; sweep with `dvc exp run --queue -S`")
        pairs.append((override.key_or_group, override.value()))
    return pairs


def _exists(cfg: DictConfig, dotted: str) -> bool:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False
        node = node._get_node(part)
    return True


def _apply_to_params(params: DictConfig, key: str, value: Any, quadrant: str | None) -> bool:
    """Apply an override to params.yaml's tree if it belongs there; False if it does not."""
    if key == "regime":
        if quadrant is None:
            raise ConfigError("regime=... needs quadrant=<name> (the regime belongs to a quadrant)")
        key = f"quadrants.{quadrant}.regime"
    if key in GROUPS:
        key = f"{key}.name"
    # New keys may only be added to a quadrant (e.g. its regime's cut_at; checked after composing).
    parts = key.split(".")
    is_quadrant_key = len(parts) == 3 and parts[0] == "quadrants" and parts[1] in QUADRANTS
    if not (_exists(params, key) or is_quadrant_key):
        return False
    OmegaConf.update(params, key, value, merge=True)
    return True


def load_params(root: Path) -> DictConfig:
    path = root / "params.yaml"
    try:
        return OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError(f"{path} not found") from None


def load_config(stage: str, argv: list[str] | None = None, root: Path | None = None) -> DictConfig:
    """The resolved config of one stage, validated; raises ConfigError on bad input."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r} (allowed: {', '.join(STAGES)})")
    root = root or project_root()
    params = load_params(root)
    overrides = _parse_overrides(argv or [])

    quadrant = next((value for key, value in overrides if key == "quadrant"), None)
    needs_quadrant = stage in QUADRANT_STAGES
    if needs_quadrant and quadrant is None:
        raise ConfigError(f"stage {stage} needs quadrant=<name> (allowed: {', '.join(QUADRANTS)})")
    if quadrant is not None and quadrant not in QUADRANTS:
        raise ConfigError(f"unknown quadrant {quadrant!r} (allowed: {', '.join(QUADRANTS)})")

    if stage in MATRIX_STAGES:
        params.quadrants[quadrant] = _matrix_entry(root, params, overrides)
    late = [(k, v) for k, v in overrides if k != "quadrant" and not _apply_to_params(params, k, v, quadrant)]

    choices = {group: check_option(root, group, OmegaConf.select(params, f"{group}.name")) for group in GROUPS}
    hydra_overrides = [f"{group}={choice}" for group, choice in choices.items()]
    if quadrant is not None:
        regime = check_option(root, "regime", OmegaConf.select(params, f"quadrants.{quadrant}.regime"))
        hydra_overrides.append(f"+regime={regime}")

    cfg = _compose(root, stage, hydra_overrides)
    OmegaConf.set_struct(cfg, False)
    cfg = OmegaConf.merge(cfg, params)
    for group, choice in choices.items():
        cfg[group].name = choice
    cfg.quadrant = quadrant
    cfg.stage = stage

    for key, value in late:
        if not _exists(cfg, key):
            raise ConfigError(f"unknown key {key!r} (not in params.yaml or conf/)")
        OmegaConf.update(cfg, key, value, merge=True)

    if quadrant is not None:
        entry = cfg.quadrants[quadrant]
        regime_keys = {k: v for k, v in entry.items() if k not in QUADRANT_TRAIN_KEYS}
        unknown = sorted(set(regime_keys) - set(cfg.regime))
        if unknown:
            raise ConfigError(f"unknown key 'quadrants.{quadrant}.{unknown[0]}' (allowed: {', '.join(QUADRANT_TRAIN_KEYS)}"
                              f" or a key of conf/regime/{entry.regime}.yaml: {', '.join(cfg.regime)})")
        cfg.regime = OmegaConf.merge(cfg.regime, regime_keys)
        cfg.regime.name = entry.regime
    if stage == "pretrain":
        cfg.train = _train_knobs("pretrain", {k: v for k, v in cfg.pretrain.items() if k != "source"})
    elif stage in ("finetune", *MATRIX_STAGES):
        entry = cfg.quadrants[quadrant]
        knobs = {**OmegaConf.to_container(cfg.finetune), "epochs": entry.get("epochs"), "lr": entry.get("lr")}
        cfg.train = _train_knobs(f"quadrants.{quadrant}", knobs)
    _validate(cfg)
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"config does not resolve: {err}".splitlines()[0]) from None
    return cfg


def _compose(root: Path, stage: str, overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml, also from inside a running Hydra app (`transferlab.sweep`'s jobs):
    that app's GlobalHydra is set aside for the composition and put back afterwards."""
    global_hydra = GlobalHydra.instance()
    outer = global_hydra.hydra
    global_hydra.clear()
    try:
        with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3", job_name=stage):
            return compose(config_name="config", overrides=overrides)
    finally:
        GlobalHydra.instance().hydra = outer


def _matrix_entry(root: Path, params: DictConfig, overrides: list[tuple[str, Any]]) -> DictConfig:
    """A matrix run's quadrant entry: the regime named on the command line with the matrix's
    budget (`matrix.lr.<regime>`; epochs are set by the stage from `matrix.steps`), replacing
    the pipeline's entry for that quadrant (whose extra keys belong to its own regime)."""
    regime = next((value for key, value in overrides if key == "regime"), None)
    if regime is None:
        raise ConfigError(f"matrix stages need regime=<name> (allowed: {', '.join(options(root, 'regime'))})")
    check_option(root, "regime", regime)
    lr = OmegaConf.select(params, f"matrix.lr.{regime}")
    if lr is None:
        raise ConfigError(f"matrix.lr.{regime} is missing in params.yaml (the matrix's learning rate for {regime})")
    entry = {"regime": regime, "epochs": 1, "lr": lr}
    if regime == "truncate_freeze":
        entry["cut_at"] = params.matrix.cut_at
    return OmegaConf.create(entry)


def _train_knobs(where: str, knobs: Any) -> DictConfig:
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainKnobs), knobs)
        OmegaConf.to_container(merged, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", "") or ""
        raise ConfigError(f"{where}.{key}: {str(err).splitlines()[0]}") from None
    checks = [
        ("epochs", merged.epochs >= 1, "an integer >= 1"),
        ("lr", merged.lr > 0, "a number > 0"),
        ("batch_size", merged.batch_size >= 1, "an integer >= 1"),
        ("weight_decay", merged.weight_decay >= 0, "a number >= 0"),
        ("train_per_class", merged.train_per_class is None or merged.train_per_class >= 1, "null or an integer >= 1"),
    ]
    for key, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"{where}.{key}={merged[key]} is not allowed (must be {allowed})")
    return merged


def _validate(cfg: DictConfig) -> None:
    if cfg.seed is not None and (not isinstance(cfg.seed, int) or cfg.seed < 0):
        raise ConfigError(f"seed={cfg.seed!r} is not allowed (must be null or an integer >= 0)")
    for key in ("image_size", "small_train_per_class", "large_train_per_class"):
        value = cfg.data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"data.{key}={value!r} is not allowed (must be an integer >= 1)")
    for key in ("source_train_per_class", "val_per_class", "test_per_class"):  # null: all the source has
        value = cfg.data.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"data.{key}={value!r} is not allowed (must be null or an integer >= 1)")
    copies = cfg.augment.get("copies")
    if not isinstance(copies, int) or copies < 0:
        raise ConfigError(f"augment.copies={copies!r} is not allowed (must be an integer >= 0)")
    for quadrant in cfg.quadrants:
        if quadrant not in QUADRANTS:
            raise ConfigError(f"unknown quadrant {quadrant!r} in params.yaml (allowed: {', '.join(QUADRANTS)})")
    if cfg.get("regime") is not None:
        init = cfg.regime.get("init")
        if init not in ("pretrained", "random"):
            raise ConfigError(f"regime.init={init!r} is not allowed (allowed: pretrained, random)")
        if cfg.regime.get("cache_features") and not cfg.regime.get("freeze_backbone"):
            raise ConfigError(f"quadrants.{cfg.quadrant}.cache_features=true is not allowed: regime {cfg.regime.name} "
                              f"trains its backbone (allowed: false, or a regime with freeze_backbone: true)")
        if OmegaConf.is_missing(cfg.regime, "cut_at"):
            raise ConfigError(
                f"regime {cfg.regime.name} needs quadrants.{cfg.quadrant}.cut_at in params.yaml (a stage name of the model)")


def save_config(cfg: DictConfig, path: Path) -> None:
    """Write the fully resolved config next to a stage's outputs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(OmegaConf.to_yaml(cfg, resolve=True))


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted.key: leaf}; list items get their index as a key part."""
    node = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else None
    if items is None:
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    if not flat and prefix:
        flat[prefix] = node
    return flat


def paths(cfg: DictConfig, root: Path | None = None) -> dict[str, Path]:
    """The configured folders, absolute, under the project root."""
    root = root or project_root()
    return {name: root / value for name, value in cfg.paths.items()}

