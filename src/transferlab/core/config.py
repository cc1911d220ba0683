"""One configuration for every stage: Hydra composes ``conf/``, ``params.yaml`` goes on top.

``conf/`` defines what each option *is* (a model's architecture, a regime's freezing, a
trainer, an augmentation pipeline); ``params.yaml`` holds the experiment knobs DVC tracks,
including which option of each group is used (``<group>.name``). Both are checked against
the schema in ``transferlab.core.schema``: an unknown key or a wrong type is a one-line
``ConfigError`` naming the key and what is allowed.

Command-line arguments use Hydra's override grammar (``key=value``): keys of params.yaml are
applied there (``model=small_vgg`` is short for ``model.name=small_vgg``), any other key must
exist in the composed config, and a stage's own arguments (``regime=`` for ``finetune``,
``quadrant=`` for ``advise``) select what it runs.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from transferlab.core import schema
from transferlab.core.errors import ConfigError
from transferlab.core.names import QUADRANTS, REGIMES


def as_dict(node: Any) -> dict[str, Any]:
    """A config mapping as a plain, resolved dict (what torch code and JSON files take)."""
    plain = OmegaConf.to_container(node, resolve=True)
    if not isinstance(plain, dict):
        raise TypeError(f"expected a mapping, got {type(plain).__name__}")
    return {str(k): v for k, v in plain.items()}


# Groups chosen in params.yaml by `<group>.name` and composed by Hydra.
GROUPS = ("experiment", "model", "trainer")
STAGES = (
    "download",
    "augment",
    "pretrain",
    "finetune",
    "race",
    "cut_sweep",
    "size_curve",
    "evaluate",
    "report",
    "advise",
    "retrain",
    "sweep",
)
# Arguments that select what a stage runs (required), with their allowed values.
STAGE_ARGUMENTS = {"finetune": {"regime": REGIMES}, "sweep": {"quadrant": QUADRANTS, "regime": REGIMES}}
# Optional arguments, any value: `advise dataset=<a folder of data/raw/>` (default: every quadrant).
OPTIONAL_ARGUMENTS = {"advise": ("dataset",)}


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


def dataset_file(root: Path, cfg: DictConfig, name: str) -> DictConfig:
    """conf/dataset/<name>.yaml with params.yaml's ``datasets.<name>`` values set onto it (null: the
    file's value). A key the file lacks is an error naming the keys it has."""
    found = read_yaml(root / "conf" / "dataset" / f"{name}.yaml")
    for key, value in (cfg.get("datasets") or {}).get(name, {}).items():
        if key not in found.keys():  # `in found` is False for a ??? value
            raise ConfigError(
                f"unknown key 'datasets.{name}.{key}' in params.yaml (allowed: {', '.join(map(str, found))}: "
                f"the keys of conf/dataset/{name}.yaml)"
            )
        if value is not None:
            found[key] = value
    return found


def read_yaml(path: Path) -> DictConfig:
    """A YAML file as a DictConfig; a missing file or a syntax error is one line with its position."""
    try:
        loaded = OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError(f"{path} not found") from None
    except Exception as err:  # yaml's ScannerError/ParserError carry the position in `problem_mark`
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path} is not valid YAML{where}: {problem}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path} must hold a mapping of keys to values")
    return loaded


def explain(err: OmegaConfBaseException, where: str) -> ConfigError:
    """An OmegaConf schema error as one line: the full key, the bad value, what is allowed."""
    key = getattr(err, "full_key", "") or getattr(err, "key", "") or ""
    message = str(err).splitlines()[0]
    object_type = getattr(err, "object_type", None)
    if "not in" in message and object_type is not None and dataclasses.is_dataclass(object_type):
        allowed = ", ".join(f.name for f in dataclasses.fields(object_type) if not f.name.startswith("_"))
        return ConfigError(f"unknown key '{key}' in {where} (allowed: {allowed})")
    if "Missing mandatory value" in message:
        return ConfigError(f"{where}: '{key}' is missing (it must be set)")
    return ConfigError(f"{where}: '{key}': {message}")


def typed(node: Any, schema_class: type, where: str) -> DictConfig:
    """``node`` merged onto the schema (unknown keys and wrong types are errors), fully set."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema_class), node)
        OmegaConf.to_container(merged, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise explain(err, where) from None
    assert isinstance(merged, DictConfig)  # a structured config merges to a mapping
    return merged


def _parse_overrides(argv: list[str]) -> list[tuple[str, Any]]:
    from hydra.core.override_parser.overrides_parser import OverridesParser

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
        value = override.value()
        pairs.append(
            (override.key_or_group, OmegaConf.create({"v": value}).v if isinstance(value, (list, dict)) else value)
        )
    return pairs


def _exists(cfg: DictConfig, dotted: str) -> bool:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False
        node = node._get_node(part)
    return True


def _conf_regime_keys(root: Path, regime: str) -> set[str]:
    """The keys conf/regime/<regime>.yaml sets (not left open with ???)."""
    path = root / "conf" / "regime" / f"{regime}.yaml"
    if not path.is_file():
        return set()
    conf = read_yaml(path)
    return {str(k) for k in conf if not OmegaConf.is_missing(conf, k)}


def _params_key(root: Path, params: DictConfig, key: str) -> str | None:
    """The params.yaml key an override sets, or None when it belongs to conf/."""
    if key in GROUPS:
        return f"{key}.name"
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "regime":  # regime.<name>.<knob>: params unless conf/regime sets it
        return None if parts[2] in _conf_regime_keys(root, parts[1]) else key
    return key if _exists(params, key) else None


def unknown_key(cfg: DictConfig, key: str) -> ConfigError:
    """'unknown key', naming the keys allowed where the path stops matching."""
    parts, node = key.split("."), cfg
    for depth, part in enumerate(parts):
        if not isinstance(node, DictConfig) or part not in node:
            where = ".".join(parts[:depth])
            allowed = ", ".join(str(k) for k in node) if isinstance(node, DictConfig) else "none: it is a value"
            return ConfigError(f"unknown key {key!r} (allowed{' in ' + where if where else ''}: {allowed})")
        node = node[part]
    return ConfigError(f"unknown key {key!r}")


def load_params(root: Path, overrides: list[tuple[str, Any]] | None = None) -> tuple[DictConfig, list[tuple[str, Any]]]:
    """params.yaml with the overrides that belong to it applied, checked against the schema;
    returns it and the overrides left for conf/."""
    params = read_yaml(root / "params.yaml")
    late = []
    for key, value in overrides or []:
        target = _params_key(root, params, key)
        if target is None:
            late.append((key, value))
        else:
            OmegaConf.update(params, target, value, merge=True)
    typed_params = typed(params, schema.Params, "params.yaml")
    experiment_defaults(root, typed_params)
    schema.check_params(typed_params, options(root, "regime"), options(root, "dataset"))
    # Every entry, not only the experiment's datasets: a typo under one that is unused today would
    # otherwise pass in silence and surface only when an experiment picks that dataset.
    for name in typed_params.datasets:
        dataset_file(root, typed_params, name)
    return typed_params, late


def experiment_defaults(root: Path, params: DictConfig) -> None:
    """The keys of ``schema.EXPERIMENT_SETTINGS`` that params.yaml leaves null take the experiment's
    ``settings``, else the schema's default (small_resnet trained here at 32 px; my_folder sets the ImageNet
    network at 64 px). A key set in params.yaml (or on the command line) wins over the experiment."""
    name = check_option(root, "experiment", params.experiment.name)
    where = f"conf/experiment/{name}.yaml"
    # Composed (an experiment may build on another through its Hydra defaults list); the other groups'
    # choices do not matter to the experiment node, so any existing option stands in for a null one.
    groups = {g: params[g].name if params[g].name is not None else options(root, g)[0] for g in GROUPS}
    composed = _compose(root, "settings", [f"{g}={check_option(root, g, c)}" for g, c in groups.items()])
    settings = composed.experiment.get("settings") or {}
    unknown = sorted(set(settings) - set(schema.EXPERIMENT_SETTINGS))
    if unknown:
        allowed = ", ".join(schema.EXPERIMENT_SETTINGS)
        raise ConfigError(f"unknown key 'settings.{unknown[0]}' in {where} (allowed: {allowed})")
    for key, default in schema.EXPERIMENT_SETTINGS.items():
        if OmegaConf.select(params, key) is None:
            value = settings.get(key)
            OmegaConf.update(params, key, default if value is None else value)


# Hydra's composition is half of a load_config (60 of 130 ms on the 2-core CPU); a process that
# loads configs again and again (a sweep's jobs, the tests: 189 loads in `make test-fast`) composes
# each (conf/ as it is now, group choices) once. Keyed by the files' contents, so an edited conf/
# is composed afresh; the result depends on nothing else (the job name only names Hydra's own node,
# which compose leaves out).
_composed: dict[tuple[str, tuple[str, ...]], DictConfig] = {}


def _conf_digest(root: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((root / "conf").rglob("*.yaml")):
        text = path.read_bytes()
        digest.update(f"{path.relative_to(root)}\0{len(text)}\0".encode() + text)
    return digest.hexdigest()


def _compose(root: Path, stage: str, overrides: list[str]) -> DictConfig:
    """conf/config.yaml composed with the group choices (a copy the caller may change)."""
    key = (_conf_digest(root), tuple(overrides))
    if key not in _composed:
        _composed[key] = _compose_now(root, stage, overrides)
    return copy.deepcopy(_composed[key])


def _compose_now(root: Path, stage: str, overrides: list[str]) -> DictConfig:
    """Compose conf/config.yaml, also from inside a running Hydra app (`transferlab.sweep`'s jobs):
    that app's GlobalHydra is set aside for the composition and put back afterwards."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    global_hydra = GlobalHydra.instance()
    outer = global_hydra.hydra
    global_hydra.clear()
    try:
        with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3", job_name=stage):
            return compose(config_name="config", overrides=overrides)
    except OmegaConfBaseException as err:
        raise explain(err, "conf/") from None
    finally:
        GlobalHydra.instance().hydra = outer


def regime_config(root: Path, name: str, settings: Any) -> DictConfig:
    """conf/regime/<name>.yaml with params.yaml's ``regime.<name>`` merged on, checked."""
    check_option(root, "regime", name)
    base = read_yaml(root / "conf" / "regime" / f"{name}.yaml")
    settings = settings if settings is not None else {}
    defined = sorted(k for k in settings if k in base and not OmegaConf.is_missing(base, k))
    if defined:  # one source of truth: params.yaml may only fill what conf/ leaves open (???) and add lr
        raise ConfigError(
            f"regime.{name}.{defined[0]} is set in both params.yaml and conf/regime/{name}.yaml (set it in one place)"
        )
    merged = typed(
        OmegaConf.merge(base, settings), schema.RegimeConf, f"regime.{name} (conf/regime/{name}.yaml + params.yaml)"
    )
    schema.check_regime(name, merged)
    merged.name = name
    return merged


def _check_groups(cfg: DictConfig) -> None:
    """Each composed group against its schema."""
    from transferlab.models._registry import family_of, model_args

    try:
        family = family_of(cfg.model)
    except ValueError as err:
        raise ConfigError(f"conf/model/{cfg.model.name}.yaml: {err}") from None
    typed(model_args(cfg.model), family.args, f"model {cfg.model.name} (conf/model/{cfg.model.name}.yaml)")
    cfg.trainer = typed(
        cfg.trainer, schema.TrainerConf, f"trainer {cfg.trainer.name} (conf/trainer/{cfg.trainer.name}.yaml)"
    )
    schema.check_trainer(cfg.trainer)
    cfg.experiment = typed(
        cfg.experiment,
        schema.ExperimentConf,
        f"experiment {cfg.experiment.name} (conf/experiment/{cfg.experiment.name}.yaml)",
    )
    schema.check_experiment(cfg.experiment)
    typed(cfg.tracking, schema.TrackingConf, "conf/tracking")


def stage_arguments(stage: str, overrides: list[tuple[str, Any]]) -> tuple[dict, list[tuple[str, Any]]]:
    wanted = {**STAGE_ARGUMENTS.get(stage, {}), **dict.fromkeys(OPTIONAL_ARGUMENTS.get(stage, ()))}
    args = {key: value for key, value in overrides if key in wanted}
    for key, allowed in STAGE_ARGUMENTS.get(stage, {}).items():
        if key not in args:
            raise ConfigError(f"stage {stage} needs {key}=<name> (allowed: {', '.join(allowed)})")
        if args[key] not in allowed:
            raise ConfigError(f"unknown {key} {args[key]!r} (allowed: {', '.join(allowed)})")
    return args, [(k, v) for k, v in overrides if k not in wanted]


def load_config(stage: str, argv: list[str] | None = None, root: Path | None = None) -> DictConfig:
    """The resolved, validated config of one stage; raises ConfigError on bad input."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r} (allowed: {', '.join(STAGES)})")
    root = root or project_root()
    args, overrides = stage_arguments(stage, _parse_overrides(argv or []))
    params, late = load_params(root, overrides)

    choices = {group: check_option(root, group, params[group].name) for group in GROUPS}
    cfg = _compose(root, stage, [f"{group}={choice}" for group, choice in choices.items()])
    OmegaConf.set_struct(cfg, False)
    for group, choice in choices.items():
        cfg[group].name = choice
    _check_groups(cfg)
    cfg.regime = {name: regime_config(root, name, params.regime.get(name)) for name in REGIMES}
    for key, value in late:  # conf/ values set on the command line
        if not _exists(cfg, key):
            merged = OmegaConf.merge(cfg, {k: v for k, v in as_dict(params).items() if k not in cfg})
            raise unknown_key(cast(DictConfig, merged), key)
        try:
            OmegaConf.update(cfg, key, value, merge=True)
        except OmegaConfBaseException as err:
            raise explain(err, "the command line") from None
    if late:
        _check_groups(cfg)
        for name in REGIMES:
            cfg.regime[name] = typed(cfg.regime[name], schema.RegimeConf, f"regime.{name}")
            schema.check_regime(name, cfg.regime[name])
    plain = as_dict(params)
    cfg = cast(DictConfig, OmegaConf.merge(cfg, {k: v for k, v in plain.items() if k not in ("regime", *GROUPS)}))
    schema.check_pretrain_source(cfg)
    schema.check_cut_points(cfg)
    schema.check_phases(cfg)
    cfg.stage = stage
    cfg.args = args
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"config does not resolve: {err}".splitlines()[0]) from None
    return cfg


def save_config(cfg: DictConfig, path: Path) -> None:
    """Write the fully resolved config next to a stage's outputs."""
    from transferlab.core.files import write_text

    write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted.key: leaf}; lists are leaves."""
    node = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, (DictConfig, ListConfig)) else cfg
    if not isinstance(node, dict):
        return {prefix: node}
    flat: dict[str, Any] = {}
    for key, value in node.items():
        flat.update(flatten(value, f"{prefix}.{key!s}" if prefix else str(key)))
    if not flat and prefix:
        flat[prefix] = node
    return flat
