"""Training configuration: typed, validated, loaded from TOML presets.

A config is a tree of frozen dataclasses. `Config.from_dict` refuses unknown
keys, wrong types and impossible values before anything is trained, naming the
key (`tie.alpha`) and the value received. Presets live in `configs/NAME.toml`;
command-line options and `--set section.key=value` override them.

Defaults are the TIE paper's (001_b369f55403bc771c.txt, section 6.1) where the
paper gives a number; every other default is a documented choice.
"""

import dataclasses
import difflib
import os
import tomllib
import typing

METHODS = ("tie", "static", "plain")
DIVERSITY = ("batch", "class")
AUGMENTATIONS = ("none", "flip")
BACKBONES = ("auto", "conv3", "conv5", "resnet")


class ConfigError(ValueError):
    """A configuration key, type or value that cannot be used."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Network shapes.

    Args:
        backbone: `conv3` (3 conv + 2 dense, the paper's 28x28 network),
            `conv5` (5 conv + 2 dense, its 32x32 network), `resnet` (residual
            CNN for CIFAR-100 / TinyImageNet) or `auto` (conv3 up to 28x28,
            conv5 above).
        width: channels of the first conv layer; later layers double it.
        dense_units: units of the first dense layer; the penultimate features
            have this size.
        latent_dim: size of the generator's noise input z.
        generator_width: channels of the generator's first feature map.
        bn_momentum: BatchNormalization momentum of both networks (Keras'
            0.99; use 0.9 for runs of a few hundred steps, see build_classifier).
    """

    backbone: str = "auto"
    width: int = 32
    dense_units: int = 256
    latent_dim: int = 64
    generator_width: int = 128
    bn_momentum: float = 0.99


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Adam learning rates (TIE paper, section 6.1: 1e-4 and 1e-3)."""

    classifier_lr: float = 1e-4
    generator_lr: float = 1e-3


@dataclasses.dataclass(frozen=True)
class TIEConfig:
    """Inversion and exclusion.

    Args:
        alpha, beta: weights of the KL and cross-entropy terms of the
            inversion loss (paper: 0.1 and 1).
        gamma_start, gamma_max: weight of the cosine-diversity term, raised
            linearly from `gamma_start` at epoch 1 by `gamma_start` per epoch
            up to `gamma_max` (paper: 10 raised "progressively" up to 100).
        diversity: pairs the cosine-diversity term averages over: `batch`
            (all pairs of the generated batch, the paper's term) or `class`
            (pairs with the same target class only).
        threshold_lambda: tau_t = mean + lambda * std of the training UE
            (paper: 0.5).
        samples_per_class: inverted samples generated per class (n + 1
            classes) after each epoch (paper: about 1000).
        generator_batch_size: batch of the generator step.
        generator_steps_per_epoch: generator updates per epoch, interleaved
            with the classifier steps inside `train_step`.
        garbage_per_batch: pool samples added to every classifier batch; the
            pool is sampled, not iterated, so an epoch costs the same at
            epoch 1 and epoch 20. 0 means batch_size // num_classes (as many
            garbage images per batch as an average class has).
        pool_capacity: maximum pool size; once full, new samples replace
            uniformly chosen old ones.
        initial_pool_size: Gaussian-noise images the pool starts with.
        threshold_samples: training images used to estimate tau_t (0 = all).
        garbage_weight: multiplier on the garbage class's balanced weight (1 =
            every class, garbage included, weighs the same in the loss). Below
            1 the classifier needs more evidence before it calls an image
            garbage: a weight w shifts the garbage logit by about log(w).
    """

    alpha: float = 0.1
    beta: float = 1.0
    gamma_start: float = 10.0
    gamma_max: float = 100.0
    diversity: str = "batch"
    threshold_lambda: float = 0.5
    samples_per_class: int = 1000
    generator_batch_size: int = 128
    generator_steps_per_epoch: int = 200
    garbage_per_batch: int = 0
    pool_capacity: int = 50_000
    initial_pool_size: int = 6_000
    threshold_samples: int = 0
    garbage_weight: float = 1.0


@dataclasses.dataclass(frozen=True)
class Config:
    """A full training run.

    Args:
        dataset: dataset name (see `keras-tie data list`).
        method: `tie` (Training-Inversion-Exclusion), `static` (n+1 classes,
            garbage class of static Gaussian noise: the paper's "No TIE"
            ablation) or `plain` (ordinary n-class classifier).
        epochs, batch_size, seed: as usual.
        limit: train on a deterministic subset of this many images (0 = all).
        validation_split: share of the training set held out for validation
            metrics (0 = none; the test split is never used for training).
        data_dir: local data directory (else KERAS_TIE_DATA_DIR).
        checkpoint_every: epochs between resumable checkpoints.
        augment: augmentation of the in-distribution training batches: `none`
            or `flip` (random horizontal flips, for data whose labels survive
            a mirror image: clothing, objects; not digits).
    """

    dataset: str = "digits"
    method: str = "tie"
    epochs: int = 20
    batch_size: int = 128
    seed: int = 0
    limit: int = 0
    validation_split: float = 0.0
    data_dir: str = ""
    checkpoint_every: int = 1
    augment: str = "none"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    tie: TIEConfig = dataclasses.field(default_factory=TIEConfig)

    def __post_init__(self):
        _check(self.method in METHODS, "method", self.method, f"one of {METHODS}")
        _check(self.model.backbone in BACKBONES, "model.backbone", self.model.backbone,
               f"one of {BACKBONES}")
        for key in ("epochs", "batch_size", "checkpoint_every"):
            _check(getattr(self, key) >= 1, key, getattr(self, key), "an integer >= 1")
        _check(self.augment in AUGMENTATIONS, "augment", self.augment,
               f"one of {AUGMENTATIONS}")
        _check(self.limit >= 0, "limit", self.limit, "0 (all) or a positive integer")
        _check(0.0 <= self.validation_split < 1.0, "validation_split", self.validation_split,
               "a number in [0, 1)")
        for key in ("width", "dense_units", "latent_dim", "generator_width"):
            value = getattr(self.model, key)
            _check(value >= 1, f"model.{key}", value, "an integer >= 1")
        _check(0.0 <= self.model.bn_momentum < 1.0, "model.bn_momentum", self.model.bn_momentum,
               "a number in [0, 1)")
        for key in ("classifier_lr", "generator_lr"):
            value = getattr(self.optimizer, key)
            _check(value > 0, f"optimizer.{key}", value, "a positive number")
        t = self.tie
        for key in ("alpha", "beta", "gamma_start", "gamma_max", "threshold_lambda"):
            _check(getattr(t, key) >= 0, f"tie.{key}", getattr(t, key), "a number >= 0")
        _check(t.diversity in DIVERSITY, "tie.diversity", t.diversity, f"one of {DIVERSITY}")
        _check(t.garbage_weight > 0, "tie.garbage_weight", t.garbage_weight, "a number > 0")
        _check(t.gamma_max >= t.gamma_start, "tie.gamma_max", t.gamma_max,
               f">= tie.gamma_start ({t.gamma_start})")
        for key in ("samples_per_class", "generator_batch_size", "pool_capacity",
                    "initial_pool_size"):
            _check(getattr(t, key) >= 1, f"tie.{key}", getattr(t, key), "an integer >= 1")
        for key in ("generator_steps_per_epoch", "garbage_per_batch", "threshold_samples"):
            _check(getattr(t, key) >= 0, f"tie.{key}", getattr(t, key), "an integer >= 0")
        _check(t.initial_pool_size <= t.pool_capacity, "tie.initial_pool_size",
               t.initial_pool_size, f"<= tie.pool_capacity ({t.pool_capacity})")

    # -- construction ---------------------------------------------------------

    @classmethod
    def from_dict(cls, values, _prefix=""):
        """Builds a config from nested dicts, refusing unknown keys and wrong types."""
        if not isinstance(values, dict):
            raise ConfigError(f"Expected a table for '{_prefix or 'config'}'. Received: {values!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in values.items():
            name = f"{_prefix}{key}"
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f" Did you mean '{_prefix}{close[0]}'?" if close else ""
                raise ConfigError(
                    f"Unknown config key '{name}'.{hint} Known keys here: {', '.join(fields)}."
                )
            kind = hints[key]
            if dataclasses.is_dataclass(kind):
                kwargs[key] = kind.from_dict(value, _prefix=f"{name}.")
            else:
                kwargs[key] = _coerce(name, value, kind)
        try:
            return cls(**kwargs)
        except ConfigError:
            raise
        except TypeError as error:  # pragma: no cover - guarded by the checks above
            raise ConfigError(str(error)) from error

    @classmethod
    def load(cls, path=None, overrides=None):
        """Reads a TOML preset (or defaults) and applies `{"a.b": value}` overrides."""
        values = {}
        if path is not None:
            if not os.path.isfile(path):
                raise ConfigError(f"Config file not found. Received: path={path!r}")
            with open(path, "rb") as f:
                try:
                    values = tomllib.load(f)
                except tomllib.TOMLDecodeError as error:
                    raise ConfigError(f"Config file {path} is not valid TOML: {error}") from error
        for dotted, value in (overrides or {}).items():
            if value is None:
                continue
            node = values
            *parents, leaf = dotted.split(".")
            for parent in parents:
                node = node.setdefault(parent, {})
                if not isinstance(node, dict):
                    raise ConfigError(f"'{parent}' in '{dotted}' is not a table.")
            node[leaf] = value
        return cls.from_dict(values)

    def to_dict(self):
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# Sections are dataclasses too; give them the same constructor.
for _section in (ModelConfig, OptimizerConfig, TIEConfig):
    _section.from_dict = classmethod(Config.from_dict.__func__)


def parse_override(text):
    """Parses `section.key=value` (value in TOML syntax, bare strings allowed)."""
    if "=" not in text:
        raise ConfigError(f"Expected KEY=VALUE, e.g. tie.alpha=0.2. Received: {text!r}")
    key, raw = (part.strip() for part in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def preset_path(name, configs_dir=None):
    """The preset file for a dataset name, or None when there is none."""
    configs_dir = configs_dir or default_configs_dir()
    path = os.path.join(configs_dir, f"{name}.toml")
    return path if os.path.isfile(path) else None


def default_configs_dir():
    """configs/ of the source tree, else the copy a non-editable install puts in
    <prefix>/share/keras-tie/configs."""
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    source_tree = os.path.join(os.path.dirname(here), "configs")
    if os.path.isdir(source_tree):
        return source_tree
    return os.path.join(sys.prefix, "share", "keras-tie", "configs")


def _coerce(name, value, kind):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is bool or isinstance(value, bool):
        ok = isinstance(value, bool) and kind is bool
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(
            f"Config key '{name}' must be of type {kind.__name__}. "
            f"Received: {name}={value!r} ({type(value).__name__})."
        )
    return value


def _check(ok, key, value, expected):
    if not ok:
        raise ConfigError(f"Config key '{key}' must be {expected}. Received: {key}={value!r}.")
