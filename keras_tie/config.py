"""Training configuration: typed, validated, loaded from TOML presets.

A config is a tree of frozen dataclasses. `Config.from_dict` refuses unknown
keys, wrong types and impossible values before anything is trained, naming the
key (`tie.alpha`) and the value received: each section (`ModelConfig`,
`TIEConfig`, ...) checks its own keys when it is built, `Config` the top-level
keys and what spans sections. Presets live in `configs/NAME.toml`;
command-line options and `--set section.key=value` override them.

Defaults are the TIE paper's (001_b369f55403bc771c.txt, section 6.1) where the
paper gives a number; every other default is a documented choice. Knobs marked
"Experimental:" lost, or made no measured difference, in the runs of
docs/experiments.md; they stay so that older run.json configs load.
"""

import dataclasses
import difflib
import math
import operator
import os
import tomllib
import typing

METHODS = ("tie", "static", "plain", "flow", "repair", "cvae")
DIVERSITY = ("batch", "class")
RETIREMENT = ("random", "reservoir")  # garbage pool rules, keras_tie/methods/tie/pool.py
CVAE_INITIAL = ("replace", "add")
INVERSION_MODES = ("inference", "training")  # the classifier's mode in the generator step
INITIAL_NOISE = ("clipped", "unclipped")  # the pool's starting noise, keras_tie/methods/tie/pool.py
AUGMENTATIONS = ("none", "flip", "shift", "flip+shift")
SCHEDULES = ("constant", "cosine")  # optimizer.classifier_schedule
CLASSIFIER_OPTIMIZERS = ("adam", "adadelta", "sgd")  # optimizer.classifier_optimizer
BACKBONES = ("auto", "conv3", "conv5", "resnet", "airbench", "cnn2")
PRECISIONS = ("float32", "mixed_bfloat16")  # model.precision
GENERATOR_INITS = ("gray", "data_mean")  # model.generator_init
GENERATOR_UPSAMPLINGS = ("transpose", "resize")  # model.generator_upsampling
FEATURE_POOLINGS = ("auto", "max", "avg")  # model.feature_pooling
GLOBAL_POOLING_BACKBONES = ("airbench", "resnet")


class ConfigError(ValueError):
    """A configuration key, type or value that cannot be used."""


# Rules that many keys share: (test, what the error says a valid value is).
_AT_LEAST_ONE = (lambda value: value >= 1, "an integer >= 1")
_COUNT = (lambda value: value >= 0, "an integer >= 0")
_NON_NEGATIVE = (lambda value: value >= 0, "a number >= 0")
_POSITIVE = (lambda value: value > 0, "a positive number")
_FRACTION = (lambda value: 0.0 <= value < 1.0, "a number in [0, 1)")


class _Table:
    """Base of `Config` and its sections: built from a dict, checked when built.

    Each subclass checks its own keys in `__post_init__`, so none is ever
    built with a bad value, and its errors name the full key (`tie.alpha`,
    from `SECTION`). Checks that span sections are `Config`'s.
    """

    SECTION: typing.ClassVar[str] = ""  # the table's name in a config file; "" at the top

    @classmethod
    def from_dict(cls, values):
        """Builds the table from nested dicts, refusing unknown keys and wrong types."""
        prefix = f"{cls.SECTION}." if cls.SECTION else ""
        if not isinstance(values, dict):
            raise ConfigError(f"Expected a table for '{prefix or 'config'}'. Received: {values!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in values.items():
            name = f"{prefix}{key}"
            if key not in fields:
                close = difflib.get_close_matches(key, fields, n=1)
                hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
                raise ConfigError(
                    f"Unknown config key '{name}'.{hint} Known keys here: {', '.join(fields)}."
                )
            kind = hints[key]
            if dataclasses.is_dataclass(kind):
                kwargs[key] = kind.from_dict(value)
            else:
                kwargs[key] = _coerce(name, value, kind)
        try:
            return cls(**kwargs)
        except ConfigError:
            raise
        except TypeError as error:  # pragma: no cover - guarded by the checks above
            raise ConfigError(str(error)) from error

    def _key(self, key):
        """The full name of `key` (a dotted path below this table) in a config file."""
        return f"{self.SECTION}.{key}" if self.SECTION else key

    def _check(self, ok, key, expected):
        """Raises ConfigError naming `key` and its value unless `ok`."""
        if ok:
            return
        name, value = self._key(key), operator.attrgetter(key)(self)
        if isinstance(value, tuple):  # shown as the TOML array it came from
            value = list(value)
        raise ConfigError(f"Config key '{name}' must be {expected}. Received: {name}={value!r}.")

    def _require(self, rule, *keys):
        test, expected = rule
        for key in keys:
            self._check(test(getattr(self, key)), key, expected)

    def _require_choice(self, key, choices):
        self._check(getattr(self, key) in choices, key, f"one of {choices}")


@dataclasses.dataclass(frozen=True)
class ModelConfig(_Table):
    """Network shapes.

    Args:
        backbone: `conv3` (3 conv + 2 dense, the paper's 28x28 network),
            `conv5` (5 conv + 2 dense, its 32x32 network), `resnet` (residual
            CNN for CIFAR-100 / TinyImageNet), `airbench` (the compact
            7-conv network of the airbench CIFAR-10 speed-run recipes, with
            width, 4x and 4x channels and global max-pooling: the CIFAR-10
            preset's), `cnn2` (2 conv + 2 dense with
            dropout and no BatchNormalization: the classifier of the CVAE
            paper's released code, for 28x28 inputs) or `auto` (conv3 up to
            28x28, conv5 above).
        width: channels of the first conv layer; later layers double it.
        dense_units: units of the first dense layer; the penultimate features
            have this size.
        latent_dim: size of the generator's noise input z.
        generator_width: channels of the generator's first feature map.
        generator_init: where the untrained generator's pixels start: "gray"
            (sigmoid bias 0, mid-gray images; the default) or "data_mean" (the
            bias at the logit of the training set's mean pixel per channel, so
            the first inverted samples have the data's mean intensity, dark for
            MNIST and Fashion-MNIST). The paper does not say (docs/tie.md).
            Experimental: `data_mean` was no gain over `gray` on Fashion-MNIST
            (docs/experiments.md, "Generator started at the data's mean pixel").
        generator_upsampling: how the generator doubles its feature maps:
            "transpose" (stride-2 transposed convolutions, the paper's
            "transposed convolutional stages"; the default) or "resize"
            (bilinear 2x upsampling followed by a 3x3 convolution, the
            resize-convolution of Odena et al., "Deconvolution and checkerboard
            artifacts", Distill 2016, which cannot draw the checkerboard
            patterns that uneven kernel overlap gives transposed convolutions).
            Experimental (docs/experiments.md, "CIFAR-10 TIE variants").
        feature_pooling: how `airbench` and `resnet` pool their last feature
            map into the penultimate features: "auto" (the backbone's own:
            global max-pooling for airbench, as in its public recipes, global
            average pooling for resnet), "max" or "avg". Backbones that
            flatten (conv3, conv5, cnn2) take "auto" only. Experimental: "avg"
            on airbench did not move CIFAR-10's level-1 shares
            (docs/experiments.md, "Global average pooling in the airbench head").
        bn_momentum: BatchNormalization momentum of both networks (Keras'
            0.99; use 0.9 for runs of a few hundred steps, see build_classifier).
        dropout: rate of a Dropout layer between the penultimate features and
            the logits (0, the default, adds none; the paper uses none). Active
            in the classifier's training steps only: the inversion, tau_t, the
            features and every score see the network without it. The
            cvae_fashion_mnist preset uses 0.5. Experimental for methods tie and
            static: 0.5 shrank TIE's garbage class on every OOD set
            (docs/experiments.md, "Dropout 0.5").
        precision: the classifier's compute precision: `float32` (default)
            or `mixed_bfloat16` (Keras mixed precision: convolutions and
            BatchNormalization in bfloat16 with float32 weights; the input
            standardisation, the features and the logits stay float32). On
            a CPU with AVX512_BF16 it made the CIFAR-10 preset's training
            step 1.57x faster (benchmarks/cifar10_speed.py; docs/cifar10.md).
            The generator stays float32.
    """

    SECTION: typing.ClassVar[str] = "model"

    backbone: str = "auto"
    width: int = 32
    dense_units: int = 256
    latent_dim: int = 64
    generator_width: int = 128
    generator_init: str = "gray"
    generator_upsampling: str = "transpose"
    feature_pooling: str = "auto"
    bn_momentum: float = 0.99
    dropout: float = 0.0
    precision: str = "float32"

    def __post_init__(self):
        self._require_choice("backbone", BACKBONES)
        self._require(_AT_LEAST_ONE, "width", "dense_units", "latent_dim", "generator_width")
        self._require(_FRACTION, "bn_momentum")
        self._check(self.generator_init in GENERATOR_INITS, "generator_init",
                    "'gray' or 'data_mean'")
        self._require_choice("generator_upsampling", GENERATOR_UPSAMPLINGS)
        self._require_choice("feature_pooling", FEATURE_POOLINGS)
        self._check(self.feature_pooling == "auto" or self.backbone in GLOBAL_POOLING_BACKBONES,
                    "feature_pooling", "'auto' unless model.backbone is one of "
                    f"{GLOBAL_POOLING_BACKBONES} (the others flatten their last feature map)")
        self._require(_FRACTION, "dropout")
        self._require_choice("precision", PRECISIONS)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig(_Table):
    """Optimizers and learning rates (TIE paper, section 6.1: Adam at 1e-4 and 1e-3).

    Args:
        classifier_optimizer: `adam` (the TIE paper's, and every preset's) or
            `adadelta` (the CVAE paper's, 002_50acf6af2ae3a4e5.txt section 4:
            lr 0.01 for MNIST, 0.1 for Fashion-MNIST), with Keras' defaults
            rho = 0.95 and epsilon = 1e-7, which are those of the Keras 2
            Adadelta the paper's code used, or `sgd` (Nesterov momentum 0.9,
            the usual CIFAR recipe; the CIFAR-10 preset's). The generator,
            the CVAE and the flows always use Adam. Experimental: `adadelta`
            lost to Adam in the Fashion-MNIST CVAE run (MNIST AUROC 56.6
            against 86.3; docs/experiments.md, "CVAE outliers"; docs/cvae.md).
        classifier_lr: the classifier's learning rate (its peak with a schedule).
        generator_lr: the TIE generator's learning rate (always constant).
        classifier_schedule: `constant` (the papers' rule) or `cosine`: the
            classifier's rate falls from `classifier_lr` to 0 along a half
            cosine over the run's `epochs` * steps per epoch
            (`keras.optimizers.schedules.CosineDecay`). The decay length is
            fixed by `epochs`: extending a finished run with `--epochs N
            --resume` lays the curve over the new total, so the rate rises
            again from where the old curve had brought it.
        warmup_epochs: with the cosine schedule, epochs over which the rate
            first rises linearly from 0 to `classifier_lr` (the cosine then
            covers the remaining steps; 0 = none). A fraction of an epoch is
            allowed.
        weight_decay: the classifier optimizer's decoupled weight decay
            (Keras' `weight_decay`: every weight, BatchNormalization's
            included, shrinks by lr * weight_decay per step; 0 = none).
    """

    SECTION: typing.ClassVar[str] = "optimizer"

    classifier_lr: float = 1e-4
    generator_lr: float = 1e-3
    classifier_schedule: str = "constant"
    classifier_optimizer: str = "adam"
    warmup_epochs: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self):
        self._require(_POSITIVE, "classifier_lr", "generator_lr")
        self._require_choice("classifier_schedule", SCHEDULES)
        # Its upper bound, the run's epochs, is Config's check.
        self._check(self.warmup_epochs == 0 or self.classifier_schedule == "cosine",
                    "warmup_epochs", "0 unless optimizer.classifier_schedule = 'cosine'")
        self._require(_FRACTION, "weight_decay")
        self._require_choice("classifier_optimizer", CLASSIFIER_OPTIMIZERS)


@dataclasses.dataclass(frozen=True)
class TIEConfig(_Table):
    """Inversion and exclusion.

    Args:
        alpha, beta: weights of the KL and cross-entropy terms of the
            inversion loss (paper: 0.1 and 1).
        gamma_start, gamma_max: weight of the cosine-diversity term, raised
            linearly from `gamma_start` at epoch 1 by `gamma_start` per epoch
            up to `gamma_max` (paper: 10 raised "progressively" up to 100).
        diversity: pairs the cosine-diversity term averages over: `batch`
            (all pairs of the generated batch, the paper's term) or `class`
            (pairs with the same target class only). Experimental: `class`
            gave no gain in rejection in 8-epoch Fashion-MNIST runs
            (docs/experiments.md, Fashion-MNIST TIE variants; docs/tie.md).
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
        pool_capacity: maximum pool size.
        pool_retirement: what a full pool keeps. `random` (default): each new
            sample replaces a uniformly chosen old one, so the pool leans to
            the latest epochs. `reservoir`: the k-th sample ever offered is kept
            with probability capacity / k (Algorithm R), so the pool stays a
            uniform sample of all epochs' samples and the initial noise, like
            the paper's pool, which keeps everything. Experimental:
            `reservoir` sent 28.2% of MNIST to garbage against `random`'s 48.5%
            (docs/experiments.md, "Reservoir retirement").
        initial_pool_size: Gaussian-noise images the pool starts with.
        initial_noise: that noise, N(0, I) in the classifier's standardised
            input space, `clipped` (default) to the pixel range [0, 1] and
            stored as 8-bit pixels like the data, or `unclipped`, kept as it
            is (about a fifth of Fashion-MNIST's noise pixels fall below 0),
            which stores the whole pool as float16 (twice the memory). The
            paper's "Gaussian noise" does not say which (docs/tie.md).
            Experimental: `unclipped` moved MNIST-to-garbage only within the
            seed spread (docs/experiments.md, "Unclipped initial noise").
        threshold_samples: training images used to estimate tau_t (0 = all).
        garbage_weight: multiplier on the garbage class's balanced weight (1 =
            every class, garbage included, weighs the same in the loss). Below
            1 the classifier needs more evidence before it calls an image
            garbage: a weight w shifts the garbage logit by about log(w).
        cvae_run: a finished `cvae` run folder of the same dataset (its
            cvae.keras): the pool starts with `initial_pool_size` CVAE outliers
            (half Type I, half Type II) instead of Gaussian noise (""= none;
            docs/cvae.md). Methods tie and static. Experimental: CVAE outliers
            in the pool did not help at any budget (docs/experiments.md,
            "TIE with CVAE outliers in its pool").
        cvae_per_epoch: CVAE outliers (half Type I, half Type II) added to the
            pool after every epoch, next to the inverted samples (0 = seed
            only; needs `cvae_run`). Experimental, as `cvae_run`.
        cvae_initial: how `cvae_run`'s initial outliers enter the pool:
            `replace` (default) the Gaussian noise, or `add` them to it, so the
            pool starts with `initial_pool_size` noise images and as many CVAE
            outliers and keeps the far-from-the-data noise the seed would
            remove (docs/cvae.md). Experimental, as `cvae_run`.
        inversion_mode: the classifier's mode in the generator step (the
            paper does not say). `inference` (default): BatchNormalization
            uses its moving statistics and the classifier is the function it
            is at test time. `training`: it normalises the generated batch by
            the batch's own statistics and updates its moving statistics with
            them, and dropout is active, as a PyTorch classifier left in
            `train()` mode during the generator step would be; the
            classifier's weights are still not changed by the generator step
            (docs/tie.md). Experimental: `training` switched TIE off on
            Fashion-MNIST (docs/experiments.md, "Inversion in training mode").
        smoothness: weight of a total-variation prior on the inverted images
            added to the inversion loss, `smoothness * mean |x[i+1,j] - x[i,j]|
            + |x[i,j+1] - x[i,j]|` over pixels and channels (pixels in [0, 1];
            0 = off, the paper's loss). Not in the TIE paper's loss: its
            earlier version (000_9425221c8688d6c3.txt, "Prior Work") names
            smoothness priors (Mahendran and Vedaldi) as what keeps inversions
            from converging to adversarial artifacts, which is what the
            CIFAR-10 inversions are (striped textures; docs/cifar10.md).
            Experimental: at 20, in a 4-epoch CIFAR-10 probe, the inversions
            became flat colour blobs, accuracy fell from 68.3 to 41.2% and no
            real OOD set went to garbage (docs/experiments.md, "Smoothness
            prior").
    """

    SECTION: typing.ClassVar[str] = "tie"

    alpha: float = 0.1  # 001_b369f55403bc771c.txt, section 6.1
    beta: float = 1.0  # ... section 6.1
    gamma_start: float = 10.0  # ... section 6.1
    gamma_max: float = 100.0  # ... section 6.1: "progressively increased (up to 100)"
    diversity: str = "batch"
    threshold_lambda: float = 0.5  # ... section 6.1
    samples_per_class: int = 1000  # ... section 6.1: "approximately 1000"
    generator_batch_size: int = 128
    generator_steps_per_epoch: int = 200
    garbage_per_batch: int = 0
    pool_capacity: int = 50_000
    pool_retirement: str = "random"
    initial_pool_size: int = 6_000
    initial_noise: str = "clipped"
    threshold_samples: int = 0
    garbage_weight: float = 1.0
    cvae_run: str = ""
    cvae_per_epoch: int = 0
    cvae_initial: str = "replace"
    inversion_mode: str = "inference"
    smoothness: float = 0.0

    def __post_init__(self):
        self._require(_NON_NEGATIVE, "alpha", "beta", "gamma_start", "gamma_max",
                      "threshold_lambda", "smoothness")
        self._require_choice("diversity", DIVERSITY)
        self._check(self.garbage_weight > 0, "garbage_weight", "a number > 0")
        self._check(self.gamma_max >= self.gamma_start, "gamma_max",
                    f">= tie.gamma_start ({self.gamma_start})")
        self._require(_AT_LEAST_ONE, "samples_per_class", "generator_batch_size",
                      "pool_capacity", "initial_pool_size")
        self._require(_COUNT, "generator_steps_per_epoch", "garbage_per_batch",
                      "threshold_samples")
        self._require_choice("pool_retirement", RETIREMENT)
        self._check(self.initial_pool_size <= self.pool_capacity, "initial_pool_size",
                    f"<= tie.pool_capacity ({self.pool_capacity})")
        self._require_choice("initial_noise", INITIAL_NOISE)
        self._require_choice("inversion_mode", INVERSION_MODES)
        self._require(_COUNT, "cvae_per_epoch")
        no_run = "when tie.cvae_run is empty (set tie.cvae_run to a cvae run folder)"
        self._check(self.cvae_per_epoch == 0 or self.cvae_run, "cvae_per_epoch", f"0 {no_run}")
        self._require_choice("cvae_initial", CVAE_INITIAL)
        self._check(self.cvae_initial == "replace" or self.cvae_run, "cvae_initial",
                    f"'replace' {no_run}")
        self._check(self.cvae_initial != "add" or not self.cvae_run
                    or 2 * self.initial_pool_size <= self.pool_capacity, "initial_pool_size",
                    f"<= tie.pool_capacity / 2 ({self.pool_capacity // 2}) with "
                    "tie.cvae_initial = 'add' (noise and CVAE outliers both start in the pool)")


@dataclasses.dataclass(frozen=True)
class FlowConfig(_Table):
    """The approximate-mass flow (method `flow`; 004_f7d5548531a0fef9.txt, docs/flow.md).

    Args:
        alpha: weight of the approximate-mass penalty in
            loss = mean_i nll(x_i) + alpha * mean_i ||d log p(x_i)/dx_i||, the
            gradient of each image's own log-likelihood (default 2 / 64 =
            0.03125: the paper's alpha = 2 is on the gradient of the batch
            mean, i.e. 2 / B per image, B = 64 here; 0 = the vanilla
            maximum-likelihood flow; docs/flow.md, "Units").
        scales: scales of the multi-scale RealNVP (paper: 2 for 28x28
            grayscale, 3 for 32x32 colour).
        blocks: residual blocks per coupling network (paper: 4 and 6).
        width: channels of the first scale's coupling networks (doubled at
            each scale and for the channel-wise couplings; 64 gives the
            paper's ~10 M / ~60 M parameters).
        learning_rate: Adam learning rate.
        clipnorm: Adam's gradient-norm clipping (0 = none).
        logit_boundary: a of the logit transform logit(a + (1 - 2a) x)
            (Dinh et al.: 0.05).
        trace_ood: OOD set scored after every epoch next to the ID test
            images (the paper's Figure 1); "" = no trace.
        trace_images: images of each trace set (0 = no trace).
    """

    SECTION: typing.ClassVar[str] = "flow"

    alpha: float = 0.03125
    scales: int = 2
    blocks: int = 4
    width: int = 64
    learning_rate: float = 1e-3
    clipnorm: float = 100.0
    logit_boundary: float = 0.05
    trace_ood: str = "mnist"
    trace_images: int = 500

    def __post_init__(self):
        self._require(_NON_NEGATIVE, "alpha", "clipnorm")
        self._require(_AT_LEAST_ONE, "scales", "blocks", "width")
        self._require(_POSITIVE, "learning_rate")
        self._check(0.0 < self.logit_boundary < 0.5, "logit_boundary", "a number in (0, 0.5)")
        self._check(self.trace_images >= 0, "trace_images", "0 (no trace) or a positive integer")


@dataclasses.dataclass(frozen=True)
class RepairConfig(_Table):
    """SR-OOD, OOD detection by sample repairing (method `repair`; 003_f548187660c0ce3b.txt,
    docs/repair.md).

    Args:
        variant: the erosion operator set: `superres` (bicubic downsampling by
            each of `factors`: SR-OOD_SR), `inpaint` (black boxes of
            `box_sizes` at `box_offsets`: SR-OOD_Inpaint) or `reconstruction`
            (the identity: SR-OOD_Rec, the ablation).
        operators: explicit operator names (`down2`, `box8x8+4-4`,
            `identity`); when given they replace the variant's set.
        factors: downsampling factors of `superres` (integers >= 2).
        box_sizes: side lengths, in pixels, of the `inpaint` boxes.
        box_offsets: distances in pixels of the box centres from the image
            centre (0: centred; o > 0: the four positions (+-o, +-o)).
        test_operator: T*, the operator of the score: `auto` (chosen after
            training by AUROC, held-out ID vs `selection_ood`) or a name.
        selection_ood: the OOD side of that choice: `vflip` (the held-out ID
            images upside down), a noise set, or a dataset (its train split).
        selection_images: held-out ID images (and as many OOD) of the choice.
        lambda_l2, lambda_perceptual: loss weights (paper, section IV-C: 1
            and 0.8); the perceptual term needs `perceptual`.
        width, depth, skips: the repair U-Net: channels of its first level,
            number of 2x downsamplings, encoder-decoder skip connections.
        learning_rate: Adam learning rate. 3e-4: at 1e-3 the U-Net of the
            reconstruction variant collapsed to a black output (all ReLUs of
            the last block dead, sigmoid at 0) within 20 steps for seed 0 on
            Fashion-MNIST, and never recovered.
        perceptual: the perception network: a classifier run folder (its
            model.keras) or a .keras file; "" = none: train and score with
            L2 only.
        layers: its layers whose activations the perceptual distance reads
            (empty: every conv layer's ReLU output).
        preview_ood: OOD set of the run's figure and quick test AUROC (""
            = automatic: fashion_mnist for mnist, cifar100 for cifar10, ...).
    """

    SECTION: typing.ClassVar[str] = "repair"

    variant: str = "superres"
    operators: tuple[str, ...] = ()
    factors: tuple[int, ...] = (2, 4)
    box_sizes: tuple[int, ...] = (8, 12)
    box_offsets: tuple[int, ...] = (0, 4)
    test_operator: str = "auto"
    selection_ood: str = "vflip"
    selection_images: int = 500
    lambda_l2: float = 1.0  # 003_f548187660c0ce3b.txt, section IV-C: lambda_1 = 1
    lambda_perceptual: float = 0.8  # ... and lambda_2 = 0.8
    width: int = 32
    depth: int = 2
    skips: bool = True
    learning_rate: float = 3e-4
    perceptual: str = ""
    layers: tuple[str, ...] = ()
    preview_ood: str = ""

    def __post_init__(self):
        from keras_tie.methods.repair.operators import VARIANTS, parse_operator

        self._require_choice("variant", VARIANTS)
        named = [("operators", name) for name in self.operators]
        if self.test_operator != "auto":
            named.append(("test_operator", self.test_operator))
        for key, name in named:
            try:
                parse_operator(name)
            except ValueError as error:
                raise ConfigError(f"Config key '{self._key(key)}': {error}") from error
        self._check(len(set(self.operators)) == len(self.operators), "operators",
                    "a list without repeats")
        self._check(self.variant != "superres" or self.operators or self.factors, "factors",
                    "a non-empty list for variant superres")
        self._check(all(f >= 2 for f in self.factors), "factors",
                    "integers >= 2 (1 is the identity)")
        self._check(self.variant != "inpaint" or self.operators
                    or (self.box_sizes and self.box_offsets), "box_sizes",
                    "non-empty (and box_offsets too) for variant inpaint")
        self._check(all(s >= 1 for s in self.box_sizes), "box_sizes", "integers >= 1")
        self._check(all(o >= 0 for o in self.box_offsets), "box_offsets", "integers >= 0")
        self._require(_NON_NEGATIVE, "lambda_l2", "lambda_perceptual")
        self._check(self.lambda_l2 + self.lambda_perceptual > 0, "lambda_l2",
                    "> 0 when repair.lambda_perceptual is 0")
        self._require(_AT_LEAST_ONE, "width", "depth", "selection_images")
        self._require(_POSITIVE, "learning_rate")


@dataclasses.dataclass(frozen=True)
class CVAEConfig(_Table):
    """CVAE outlier generation and the (n+1)-class classifier (method `cvae`;
    002_50acf6af2ae3a4e5.txt, docs/cvae.md).

    Args:
        latent_dim: d, the CVAE's latent size (paper, section 4: 8 for MNIST,
            10 for Fashion-MNIST; the presets set it).
        width: channels of the CVAE's first convolution (the second has twice).
        hidden_units: units of the dense layer of encoder and decoder.
        vae_epochs: epochs of the CVAE, trained before the classifier (whose
            epochs are the top-level `epochs`).
        learning_rate: Adam learning rate of the CVAE.
        beta_min, beta_max: the Type I step beta ~ U[beta_min, beta_max]
            (paper, section 3.1: [0.1, 1]; its released code, whose range the
            presets take: [0.1, 28], see docs/cvae.md).
        coverage: share of each class's latent codes inside its Type II
            ellipsoid (paper, section 3.2: 0.95).
        type1_per_epoch, type2_per_epoch: outliers of each type regenerated
            before every classifier epoch (the whole extra class is replaced).
        ood_per_batch: outliers added to each classifier batch (0 = as many
            as the batch has ID images).
        ood_weight: loss weight of the OOD class, the ID classes weighing 1
            (paper, section 4.3: 0.1).
        jacobian_batch: training images per Type I Jacobian pass.
        clip_type1: clip Type I samples to [0, 1] (default false: the paper's
            x + beta v is a point of R^D; its released code clips, and so
            does the Fashion-MNIST preset, not the MNIST one: docs/cvae.md).
    """

    SECTION: typing.ClassVar[str] = "cvae"

    latent_dim: int = 8
    width: int = 32
    hidden_units: int = 256
    vae_epochs: int = 10
    learning_rate: float = 1e-3
    beta_min: float = 0.1  # 002_50acf6af2ae3a4e5.txt, section 3.1
    beta_max: float = 1.0
    coverage: float = 0.95  # ... section 3.2
    type1_per_epoch: int = 10_000
    type2_per_epoch: int = 10_000
    ood_per_batch: int = 0
    ood_weight: float = 0.1  # ... section 4.3
    jacobian_batch: int = 512
    clip_type1: bool = False

    def __post_init__(self):
        self._require(_AT_LEAST_ONE, "latent_dim", "width", "hidden_units", "vae_epochs",
                      "jacobian_batch")
        self._require(_COUNT, "type1_per_epoch", "type2_per_epoch", "ood_per_batch")
        self._check(self.type1_per_epoch + self.type2_per_epoch >= 1, "type1_per_epoch",
                    ">= 1 when cvae.type2_per_epoch is 0")
        self._require(_POSITIVE, "learning_rate")
        self._require(_NON_NEGATIVE, "beta_min")
        self._check(self.beta_max >= self.beta_min, "beta_max",
                    f">= cvae.beta_min ({self.beta_min})")
        self._check(0.0 < self.coverage <= 1.0, "coverage", "a number in (0, 1]")
        self._check(self.ood_weight > 0, "ood_weight", "a number > 0")


@dataclasses.dataclass(frozen=True)
class Config(_Table):
    """A full training run.

    Args:
        dataset: dataset name (see `keras-tie data list`).
        method: `tie` (Training-Inversion-Exclusion), `static` (n+1 classes,
            garbage class of static Gaussian noise: the paper's "No TIE"
            ablation), `plain` (ordinary n-class classifier) or `flow` (a
            RealNVP density model with the approximate-mass penalty; section
            `flow`); `repair` (SR-OOD: a repair network scored by the
            distance between an image and its repair; section `repair`);
            `cvae` (an (n+1)-class classifier whose extra class is Type I and
            Type II outliers of a CVAE; section `cvae`).
        epochs, batch_size, seed: as usual.
        limit: train on a deterministic subset of this many images (0 = all).
        validation_split: share of the training set held out for validation
            metrics (0 = none; the test split is never used for training).
        data_dir: local data directory (else KERAS_TIE_DATA_DIR).
        checkpoint_every: epochs between resumable checkpoints.
        checkpoint_keep: how many of the newest checkpoints stay in
            RUN_DIR/checkpoints (default 2: the last one and the one before,
            should the last be damaged); 0 keeps every one, for tracing a
            run epoch by epoch afterwards (`benchmarks/checkpoint_trace.py`).
            A TIE checkpoint holds the garbage pool: up to
            `tie.pool_capacity` * H * W * C bytes each (39 MB at 50,000
            28x28 images; twice that with `tie.initial_noise = "unclipped"`).
        augment: augmentation of the in-distribution training batches: `none`,
            `flip` (random horizontal flips, for data whose labels survive
            a mirror image: clothing, objects; not digits), `shift` (random
            translations by up to 2 pixels each way, the uncovered border
            black, as the usual pad-and-crop; for digits too; see
            `keras_tie.training.batches.random_shift`), or `flip+shift` (both).
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
    checkpoint_keep: int = 2
    augment: str = "none"
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    tie: TIEConfig = dataclasses.field(default_factory=TIEConfig)
    flow: FlowConfig = dataclasses.field(default_factory=FlowConfig)
    repair: RepairConfig = dataclasses.field(default_factory=RepairConfig)
    cvae: CVAEConfig = dataclasses.field(default_factory=CVAEConfig)

    def __post_init__(self):
        self._require_choice("method", METHODS)
        self._check(self.checkpoint_keep >= 0, "checkpoint_keep",
                    "0 (keep every checkpoint) or a positive integer")
        self._require(_AT_LEAST_ONE, "epochs", "batch_size", "checkpoint_every")
        self._require_choice("augment", AUGMENTATIONS)
        self._check(self.limit >= 0, "limit", "0 (all) or a positive integer")
        self._require(_FRACTION, "validation_split")
        # Across sections (each section has checked its own keys when it was built):
        self._check(0.0 <= self.optimizer.warmup_epochs < self.epochs, "optimizer.warmup_epochs",
                    f"a number in [0, epochs) (epochs = {self.epochs})")

    # -- construction ---------------------------------------------------------

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
        return cls.from_dict(_overlay(values, overrides))

    def to_dict(self):
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def with_overrides(self, overrides):
        """This config with `{"a.b": value}` overrides applied (None values skipped), checked
        as `load` checks them."""
        return Config.from_dict(_overlay(self.to_dict(), overrides))

    def differences(self, other):
        """Dotted keys whose values differ, as {key: (self's value, other's value)}."""
        mine, theirs = _flatten(self.to_dict()), _flatten(other.to_dict())
        return {key: (mine[key], theirs[key]) for key in mine if mine[key] != theirs[key]}


def _overlay(values, overrides):
    """`values` (nested dicts, changed in place) with `{"a.b": value}` overrides set."""
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
    return values


def _flatten(values, prefix=""):
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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
    if typing.get_origin(kind) is tuple:  # tuple[T, ...]: a TOML array of T
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"Config key '{name}' must be a list. Received: {name}={value!r} "
                              f"({type(value).__name__}).")
        item = typing.get_args(kind)[0]
        return tuple(_coerce(f"{name}[{i}]", v, item) for i, v in enumerate(value))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is bool or isinstance(value, bool):
        ok = isinstance(value, bool) and kind is bool
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(
            f"Config key '{name}' must be of type {kind.__name__}. "
            f"Received: {name}={value!r} ({type(value).__name__})."
        )
    if kind is float and not math.isfinite(value):
        raise ConfigError(
            f"Config key '{name}' must be a finite number. Received: {name}={value!r}.")
    return value

