"""Stage `download`: make the source and the four target datasets under data/raw/.

The built-in data is generated deterministically from `seed` (transferlab.synthetic);
same seed -> byte-identical arrays. Each dataset gets train/val/test splits, uint8
arrays and class names (data/raw/<dataset>/).
"""

from __future__ import annotations

import shutil

from omegaconf import DictConfig, OmegaConf

from transferlab.cli import run_stage
from transferlab.config import DATASETS, ConfigError, load_config, paths, save_config
from transferlab.data import SPLITS, save_split, write_json
from transferlab.synthetic import FAMILIES, RenderParams, make_split

SPLIT_SEED = {"train": 0, "val": 1, "test": 2}


def render_params(cfg: DictConfig) -> RenderParams:
    render = OmegaConf.to_container(cfg.data.render)
    return RenderParams(image_size=cfg.data.image_size, **{k: tuple(v) if isinstance(v, list) else v
                                                            for k, v in render.items()})


def dataset_specs(cfg: DictConfig) -> dict[str, dict]:
    """Per dataset: family, class names and images per class for each split."""
    data = cfg.data
    specs = {"source": {"family": data.source.family, "classes": list(data.source.classes),
                        "train": data.source_train_per_class}}
    for quadrant in DATASETS[1:]:
        target = data.targets[quadrant]
        if target.size not in ("small", "large"):
            raise ConfigError(f"data.targets.{quadrant}.size={target.size!r} is not allowed (allowed: small, large)")
        specs[quadrant] = {"family": target.family, "classes": list(target.classes),
                           "train": data[f"{target.size}_train_per_class"]}
    for name, spec in specs.items():
        if spec["family"] not in FAMILIES:
            raise ConfigError(f"unknown family {spec['family']!r} for {name} (allowed: {', '.join(FAMILIES)})")
        unknown = [c for c in spec["classes"] if c not in FAMILIES[spec["family"]]]
        if unknown or len(spec["classes"]) < 2:
            raise ConfigError(f"bad classes {unknown or spec['classes']} for {name} "
                              f"(allowed: 2 or more of {', '.join(FAMILIES[spec['family']])})")
        spec["val"], spec["test"] = data.val_per_class, data.test_per_class
    return specs


def generate(cfg: DictConfig, name: str, spec: dict, params: RenderParams, root=None) -> None:
    folder = paths(cfg, root)["raw"] / name
    counts = {}
    for split in SPLITS:
        seed_words = [cfg.seed or 0, DATASETS.index(name), SPLIT_SEED[split]]
        x, y = make_split(spec["family"], spec["classes"], spec[split], seed_words, params)
        save_split(folder, split, x, y)
        counts[split] = int(len(y))
    write_json(folder / "meta.json", {"name": name, "family": spec["family"], "classes": spec["classes"],
                                      "counts": counts, "image_size": params.image_size, "source": "builtin"})


def main(argv: list[str]) -> None:
    cfg = load_config("download", argv)
    if cfg.data.kind != "builtin":
        raise ConfigError(f"data kind {cfg.data.kind!r} is not supported yet (allowed: builtin)")
    specs = dataset_specs(cfg)
    params = render_params(cfg)
    raw = paths(cfg)["raw"]
    if raw.exists():
        shutil.rmtree(raw)
    for name, spec in specs.items():
        generate(cfg, name, spec, params)
        print(f"{name}: {len(spec['classes'])} classes, per class train/val/test = "
              f"{spec['train']}/{spec['val']}/{spec['test']}")
    save_config(cfg, raw / "config.yaml")


if __name__ == "__main__":
    run_stage("download", main)
