"""The config tree: each section checks its own keys when built, Config what spans sections."""

import dataclasses
import glob
import json
import os

import pytest

from keras_tie.config import (
    Config,
    ConfigError,
    CVAEConfig,
    FlowConfig,
    ModelConfig,
    OptimizerConfig,
    RepairConfig,
    TIEConfig,
    default_configs_dir,
)

SECTIONS = (ModelConfig, OptimizerConfig, TIEConfig, FlowConfig, RepairConfig, CVAEConfig)


def test_each_section_is_named_as_its_key_in_config():
    tables = {f.name: f.default_factory for f in dataclasses.fields(Config)
              if f.default_factory is not dataclasses.MISSING}
    assert {name: table.SECTION for name, table in tables.items()} == {
        "model": "model", "optimizer": "optimizer", "tie": "tie", "flow": "flow",
        "repair": "repair", "cvae": "cvae"}
    assert set(tables.values()) == set(SECTIONS)


@pytest.mark.parametrize("section, changes, message", [
    (ModelConfig, {"dropout": 1.0},
     "Config key 'model.dropout' must be a number in [0, 1). Received: model.dropout=1.0."),
    (ModelConfig, {"backbone": "vgg"}, "Config key 'model.backbone' must be one of "
     "('auto', 'conv3', 'conv5', 'resnet', 'airbench', 'cnn2'). Received: model.backbone='vgg'."),
    (ModelConfig, {"feature_pooling": "avg"}, "Config key 'model.feature_pooling' must be 'auto' "
     "unless model.backbone is one of ('airbench', 'resnet') (the others flatten their last "
     "feature map). Received: model.feature_pooling='avg'."),
    (OptimizerConfig, {"classifier_lr": 0.0}, "Config key 'optimizer.classifier_lr' must be a "
     "positive number. Received: optimizer.classifier_lr=0.0."),
    (OptimizerConfig, {"warmup_epochs": 1.0}, "Config key 'optimizer.warmup_epochs' must be 0 "
     "unless optimizer.classifier_schedule = 'cosine'. Received: optimizer.warmup_epochs=1.0."),
    (TIEConfig, {"gamma_start": 20.0, "gamma_max": 10.0}, "Config key 'tie.gamma_max' must be "
     ">= tie.gamma_start (20.0). Received: tie.gamma_max=10.0."),
    (TIEConfig, {"cvae_per_epoch": 5}, "Config key 'tie.cvae_per_epoch' must be 0 when "
     "tie.cvae_run is empty (set tie.cvae_run to a cvae run folder). Received: "
     "tie.cvae_per_epoch=5."),
    (FlowConfig, {"logit_boundary": 0.5}, "Config key 'flow.logit_boundary' must be a number in "
     "(0, 0.5). Received: flow.logit_boundary=0.5."),
    (RepairConfig, {"factors": (2, 1)}, "Config key 'repair.factors' must be integers >= 2 "
     "(1 is the identity). Received: repair.factors=[2, 1]."),
    (CVAEConfig, {"type1_per_epoch": 0, "type2_per_epoch": 0}, "Config key "
     "'cvae.type1_per_epoch' must be >= 1 when cvae.type2_per_epoch is 0. Received: "
     "cvae.type1_per_epoch=0."),
])
def test_a_section_refuses_a_bad_value_when_built(section, changes, message):
    with pytest.raises(ConfigError) as error:
        section(**changes)
    assert str(error.value) == message
    with pytest.raises(ConfigError) as error:  # replace() builds a new section, checked too
        dataclasses.replace(section(), **changes)
    assert str(error.value) == message


def test_a_section_from_dict_names_its_keys_in_full():
    assert TIEConfig.from_dict({"alpha": 1}).alpha == 1.0
    with pytest.raises(ConfigError, match="Unknown config key 'tie.alpah'. Did you mean "
                                          "'tie.alpha'"):
        TIEConfig.from_dict({"alpah": 1.0})
    with pytest.raises(ConfigError, match="Config key 'flow.scales' must be of type int"):
        FlowConfig.from_dict({"scales": 1.5})


def test_config_checks_what_spans_sections():
    cosine = OptimizerConfig(classifier_schedule="cosine", warmup_epochs=2.0)  # fine alone
    assert Config(epochs=3, optimizer=cosine).optimizer.warmup_epochs == 2.0
    with pytest.raises(ConfigError) as error:
        Config(epochs=2, optimizer=cosine)
    assert str(error.value) == ("Config key 'optimizer.warmup_epochs' must be a number in "
                                "[0, epochs) (epochs = 2). Received: optimizer.warmup_epochs=2.0.")
    with pytest.raises(ConfigError, match=r"^Config key 'epochs' must be an integer >= 1\. "
                                          r"Received: epochs=0\.$"):
        Config(epochs=0)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(default_configs_dir(), "*.toml"))),
                         ids=os.path.basename)
def test_every_preset_loads_and_survives_a_run_json_round_trip(path):
    config = Config.load(path)
    saved = json.loads(json.dumps(config.to_dict()))  # run.json's "config", tuples as lists
    assert Config.from_dict(saved) == config


def test_experimental_knobs_still_load():
    # Old run.json configs carry them; they lost in docs/experiments.md but are not removed.
    config = Config.load(None, {
        "tie.pool_retirement": "reservoir", "tie.inversion_mode": "training",
        "tie.initial_noise": "unclipped", "tie.diversity": "class",
        "tie.cvae_run": "runs/fm_cvae", "tie.cvae_per_epoch": 2000, "tie.cvae_initial": "add",
        "tie.initial_pool_size": 6000, "model.dropout": 0.5, "model.generator_init": "data_mean",
        "optimizer.classifier_optimizer": "adadelta"})
    assert (config.tie.pool_retirement, config.tie.cvae_initial, config.model.dropout,
            config.optimizer.classifier_optimizer) == ("reservoir", "add", 0.5, "adadelta")
