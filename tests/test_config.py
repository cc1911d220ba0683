import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from transferlab.config import GROUPS, QUADRANTS, ConfigError, flatten, load_config

from conftest import project_env


def test_composes_conf_groups_with_params_on_top(repo):
    cfg = load_config("finetune", ["quadrant=small_different"], root=repo)
    params = OmegaConf.load(repo / "params.yaml")
    model_file = OmegaConf.load(repo / "conf" / "model" / f"{params.model.name}.yaml")
    assert cfg.model.name == params.model.name and cfg.model._target_ == model_file._target_  # from conf/model
    assert cfg.regime.name == params.quadrants.small_different.regime == "truncate_freeze"
    assert cfg.regime.cut_at == params.quadrants.small_different.cut_at  # params merged onto conf/regime
    assert cfg.regime.freeze_backbone is True  # from conf/regime/truncate_freeze.yaml
    assert cfg.train.lr == params.quadrants.small_different.lr
    assert cfg.train.batch_size == params.finetune.batch_size


def test_command_line_overrides_params_and_conf_values(repo):
    cfg = load_config("finetune", ["quadrant=small_similar", "quadrants.small_similar.lr=0.5",
                                   "regime=scratch", "model.widths=[8,16,32,64]"], root=repo)
    assert cfg.train.lr == 0.5 and cfg.regime.name == "scratch" and cfg.regime.init == "random"
    assert list(cfg.model.widths) == [8, 16, 32, 64]


def test_group_can_be_switched_from_the_command_line(repo):
    cfg = load_config("pretrain", ["model=small_cnn"], root=repo)
    assert cfg.model.name == "small_cnn" and cfg.model._target_.endswith("SmallCNN")


def test_no_value_is_defined_both_in_params_and_in_conf(repo):
    """One source of truth: a params.yaml leaf may only fill a key that conf/ leaves open (???)."""
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
    for quadrant in QUADRANTS:  # a quadrant's keys are merged onto its own regime's file
        check(repo / "conf" / "regime" / f"{params.quadrants[quadrant].regime}.yaml", f"quadrants.{quadrant}")
    main_conf = OmegaConf.load(repo / "conf/config.yaml")
    overlaps += [f"{k}: params.yaml and conf/config.yaml" for k in main_conf if k != "defaults" and k in params]
    assert not overlaps, overlaps
    for quadrant in QUADRANTS:  # and every quadrant composes
        assert load_config("finetune", [f"quadrant={quadrant}"], root=repo).regime.name


@pytest.mark.parametrize("argv,message", [
    (["quadrant=medium"], "unknown quadrant 'medium' (allowed: small_similar, small_different, large_similar, large_different)"),
    (["quadrant=small_similar", "regime=magic"], "unknown regime 'magic' (allowed: finetune_all, freeze_all, scratch, truncate_freeze)"),
    (["quadrant=small_similar", "model=vit"], "unknown model 'vit' (allowed: efficientnet_b0, mobilenet_v3_small, resnet18, resnet34, resnet50, small_cnn, small_resnet, small_vgg, vgg11_bn)"),
    (["quadrant=small_similar", "experiment=imagenet"], "unknown experiment 'imagenet' (allowed: builtin, cifar10_stl10_eurosat, mnist_svhn_fashion, my_folders)"),
    (["quadrant=small_similar", "quadrants.small_similar.lr=0"], "quadrants.small_similar.lr=0.0 is not allowed (must be a number > 0)"),
    (["quadrant=small_similar", "quadrants.small_similar.lr=-1e-3"], "lr=-0.001 is not allowed (must be a number > 0)"),
    (["quadrant=small_similar", "quadrants.small_similar.epochs=0"], "epochs=0 is not allowed (must be an integer >= 1)"),
    (["quadrant=small_similar", "quadrants.small_similar.epochs=two"], "quadrants.small_similar.epochs"),
    (["quadrant=small_similar", "finetune.train_per_class=0"], "train_per_class=0 is not allowed"),
    (["quadrant=small_similar", "finetune.batchsize=3"], "unknown key 'finetune.batchsize'"),
    (["quadrant=small_similar", "no.such.key=1"], "unknown key 'no.such.key'"),
    (["quadrant=small_similar", "quadrants.small_similar.dropout=0.5"], "unknown key 'quadrants.small_similar.dropout' (allowed: regime, epochs, lr or a key of conf/regime/freeze_all.yaml"),
    (["quadrant=small_different", "quadrants.small_different.cut_at=null", "regime=truncate_freeze"], None),
    ([], "stage finetune needs quadrant=<name>"),
])
def test_bad_input_is_one_clear_error(repo, argv, message):
    if message is None:  # cut_at=null is a legal value (keep every stage): no error
        assert load_config("finetune", argv, root=repo).regime.cut_at is None
        return
    with pytest.raises(ConfigError) as err:
        load_config("finetune", argv, root=repo)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_pretrain_lr_must_be_positive(repo):
    with pytest.raises(ConfigError, match=r"pretrain.lr=-0.1 is not allowed \(must be a number > 0\)"):
        load_config("pretrain", ["pretrain.lr=-0.1"], root=repo)


def test_truncate_freeze_requires_cut_at(tmp_path, repo):
    from conftest import copy_project

    project = copy_project(tmp_path / "p")
    params = OmegaConf.load(project / "params.yaml")
    del params.quadrants.small_different["cut_at"]
    OmegaConf.save(params, project / "params.yaml")
    with pytest.raises(ConfigError, match="regime truncate_freeze needs quadrants.small_different.cut_at"):
        load_config("finetune", ["quadrant=small_different"], root=project)


@pytest.mark.parametrize("module,argv,message", [
    ("finetune", ["quadrant=huge_similar"], "error: unknown quadrant 'huge_similar' (allowed: small_similar"),
    ("pretrain", ["pretrain.epochs=0"], "error: pretrain.epochs=0 is not allowed (must be an integer >= 1)"),
    ("finetune", ["quadrant=small_similar", "quadrants.small_similar.regime=freeze_all"],
     "error: pretrained checkpoint"),
    ("finetune", ["quadrant=small_different", "quadrants.small_different.cut_at=stage9"],
     "error: quadrants.small_different: unknown cut_at 'stage9' (allowed: stem, stage1, stage2, stage3)"),
    ("pretrain", ["data.image_size=8", "model=small_vgg"],
     "error: model=small_vgg: image_size=8 is too small for model small_vgg"),
    ("finetune", ["quadrant=small_similar", "model=resnet18", "model.weights=foo", "regime=scratch"],
     "error: quadrants.small_similar: unknown weights 'foo' for resnet18 (allowed: null, imagenet)"),
    ("finetune", ["quadrant=small_different", "finetune.train_per_class=50", "regime=scratch"],
     "error: train_per_class=50 is larger than the data: the smallest class has 2 training images (allowed: null or 1..2)"),
])
def test_stage_command_exits_non_zero_with_one_line_before_training(tmp_path, module, argv, message):
    """Run the real command in a project without data or checkpoints: it must stop on the input."""
    from conftest import copy_project

    project = copy_project(tmp_path / "p")
    if (module == "finetune" and "quadrant=huge_similar" not in argv) or "data.image_size=8" in argv:
        # Data exists (so the only missing input is the checkpoint / the bad cut point).
        subprocess.run([sys.executable, "-m", "transferlab.download", "data.source_train_per_class=2",
                        "data.small_train_per_class=2", "data.large_train_per_class=2", "data.val_per_class=1",
                        "data.test_per_class=1"], cwd=project, env=project_env(), check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "transferlab.augment"], cwd=project, env=project_env(), check=True,
                       capture_output=True)
    done = subprocess.run([sys.executable, "-m", f"transferlab.{module}", *argv], cwd=project, env=project_env(),
                          capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(message), done.stderr
    assert "error:" not in "\n".join(lines[:-1])
    assert not (project / "mlflow.db").exists(), "no training (and no MLflow run) may start on bad input"
