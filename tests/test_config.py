"""Configuration: Hydra composes conf/, params.yaml goes on top, one source of truth for every value."""

from omegaconf import OmegaConf

from transferlab.core.config import GROUPS, flatten, load_config
from transferlab.core.names import REGIMES


def test_composes_conf_groups_with_params_on_top(repo):
    """Catches: a group file not composed, params.yaml not merged onto conf/regime, a stage argument lost."""
    cfg = load_config("finetune", ["regime=truncate_freeze", "model=efficientnet_b0"], root=repo)
    params = OmegaConf.load(repo / "params.yaml")
    model_file = OmegaConf.load(repo / "conf" / "model" / "efficientnet_b0.yaml")
    assert cfg.model.name == "efficientnet_b0" and cfg.model._target_ == model_file._target_  # from conf/model
    assert cfg.args.regime == "truncate_freeze"
    assert cfg.regime.truncate_freeze.cut_at == params.regime.truncate_freeze.cut_at  # params onto conf/regime
    assert cfg.regime.truncate_freeze.freeze_backbone is True  # from conf/regime/truncate_freeze.yaml
    assert cfg.regime.truncate_freeze.lr == params.regime.truncate_freeze.lr
    assert cfg.finetune.weight_decay == params.finetune.weight_decay and list(cfg.seeds) == list(params.seeds)
    assert set(cfg.regime) == set(REGIMES)


def test_command_line_overrides_params_and_conf_values(repo):
    """Catches: command-line values applied to the wrong tree, or conf/ values that cannot be overridden."""
    cfg = load_config(
        "finetune",
        [
            "regime=scratch",
            "regime.scratch.lr=0.5",
            "model.widths=[8,16,32]",
            "regime.finetune_all.head_epochs=2",
            "trainer.strategy=ddp",
            "trainer.cell_processes=1",
            "seeds=[4]",
        ],
        root=repo,
    )
    assert cfg.regime.scratch.lr == 0.5 and cfg.regime.scratch.init == "random"
    assert list(cfg.model.widths) == [8, 16, 32] and cfg.regime.finetune_all.head_epochs == 2
    assert cfg.trainer.strategy == "ddp" and list(cfg.seeds) == [4]


def test_group_can_be_switched_from_the_command_line(repo):
    """Catches: `model=<name>` not switching the composed group."""
    cfg = load_config(
        "pretrain",
        ["model=small_cnn", "regime.truncate_freeze.cut_at=block2", "cut_sweep.cut_at=[block1,block2]"],
        root=repo,
    )
    assert cfg.model.name == "small_cnn" and cfg.model._target_ == "transferlab.models.small_cnn"


def test_no_value_is_defined_both_in_params_and_in_conf(repo):
    """One source of truth: a params.yaml leaf may only fill a key that conf/ leaves open (???).
    Catches: a knob defined twice, whose two values would silently disagree."""
    params = OmegaConf.load(repo / "params.yaml")
    flat_params = flatten(params)
    overlaps = []

    def check(conf_file, prefix: str) -> None:
        for key, value in flatten(OmegaConf.load(conf_file)).items():
            if f"{prefix}.{key}" in flat_params and value != "???":
                overlaps.append(f"{prefix}.{key}: params.yaml and {conf_file.relative_to(repo)}")

    for group in GROUPS:  # every option, not only the chosen one
        for option in (repo / "conf" / group).glob("*.yaml"):
            check(option, group)
    for regime in REGIMES:  # regime.<name> is merged onto conf/regime/<name>.yaml
        check(repo / "conf" / "regime" / f"{regime}.yaml", f"regime.{regime}")
    main_conf = OmegaConf.load(repo / "conf/config.yaml")
    overlaps += [
        f"{k}: params.yaml and conf/config.yaml" for k in map(str, main_conf) if k != "defaults" and k in params
    ]
    assert not overlaps, overlaps
    for stage in ("download", "augment", "pretrain", "cut_sweep", "size_curve", "evaluate", "report"):
        assert load_config(stage, [], root=repo).stage == stage
    for regime in REGIMES:
        assert load_config("finetune", [f"regime={regime}"], root=repo).args.regime == regime


def test_an_edited_conf_file_is_composed_afresh_and_a_loaded_config_is_the_callers_own(repo, tmp_path):
    """load_config composes each state of conf/ once per process. Catches: a stale composition served
    after a conf/ file changed (a sweep job or a test would run on the old value), and one load's
    command-line values or the caller's changes leaking into the next load."""
    import shutil

    shutil.copytree(repo / "conf", tmp_path / "conf")
    shutil.copy(repo / "params.yaml", tmp_path / "params.yaml")
    first = load_config("finetune", ["regime=scratch", "model.widths=[4,5,6]"], root=tmp_path)
    first.model.widths = [1, 2, 3]
    model_file = tmp_path / "conf/model/small_resnet.yaml"
    assert list(load_config("finetune", ["regime=scratch"], root=tmp_path).model.widths) == [32, 64, 128]
    model_file.write_text(model_file.read_text().replace("widths: [32, 64, 128]", "widths: [8, 16, 32]"))
    assert list(load_config("finetune", ["regime=scratch"], root=tmp_path).model.widths) == [8, 16, 32]


def test_null_settings_come_from_the_experiment_else_the_schema_and_the_command_line_wins(repo):
    """Catches: my_folder not switching to the ImageNet network (the README's first example for your own images),
    the builtin run losing its small network, or an experiment's setting overriding the command line."""
    builtin = load_config("pretrain", [], root=repo)
    assert (builtin.model.name, builtin.pretrain.source, builtin.data.image_size, builtin.finetune.batch_size) == (
        "small_resnet",
        "pipeline",
        32,
        64,
    )
    folder = load_config("pretrain", ["experiment=my_folder"], root=repo)
    assert (folder.model.name, folder.pretrain.source, folder.data.image_size, folder.finetune.batch_size) == (
        "efficientnet_lite0",
        "imagenet",
        64,
        32,
    )
    assert folder.experiment.source is None
    mine = load_config(
        "pretrain", ["experiment=my_folder", "model=mobilenet_v3_small", "data.image_size=96"], root=repo
    )
    assert (mine.model.name, mine.pretrain.source, mine.data.image_size) == ("mobilenet_v3_small", "imagenet", 96)
