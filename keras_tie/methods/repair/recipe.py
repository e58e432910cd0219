"""The run recipe of SR-OOD (method `repair`), into a run folder like the classifier's.

A repair run folder holds::

    run.json            the resolved config, dataset, image shape, the operator
                        set, the chosen test operator T* and how it was
                        chosen, the perception network, history, test metrics
    model.keras         the `RepairModel` (keras_tie.run_folder.load_model; it carries
                        its perception network and T*)
    history.csv         one row per epoch (Keras CSVLogger)
    images/repairs.png  original / eroded / repaired rows for ID test images
                        and an OOD set (the paper's Figure 3)
    logs/               TensorBoard scalars and the repairs image
    checkpoints/        resumable checkpoints (see checkpoint.py)

Steps: train the repair network with `fit` (one erosion operator drawn per
image), choose T* on held-out images by AUROC (`keras_tie.methods.repair.selection`),
save, then measure on the ID test split: the mean repair distances and, as a
first look, the AUROC against the preview OOD set's test split. The full
evaluation is `keras-tie evaluate RUN_DIR`.

Without a perception network (`repair.perceptual = ""`) the network is
trained on L2 alone and scored by L2 (the paper's Table IV ablation, its
weakest distance); run.json and the console say so.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from keras_tie import metrics
from keras_tie._io import read_json
from keras_tie.config import ConfigError
from keras_tie.methods.repair.model import RepairModel
from keras_tie.methods.repair.operators import variant_operators
from keras_tie.methods.repair.perceptual import PerceptualDistance, load_perception_network
from keras_tie.methods.repair.selection import (
    score_images,
    select_operator,
    selection_ood_images,
)
from keras_tie.methods.repair.unet import build_repair_unet
from keras_tie.run_folder import IMAGES_DIR, LOGS_DIR, MODEL_FILE, RUN_FILE, run_path, save_model
from keras_tie.training.callbacks import image_grid, write_png
from keras_tie.training.recipe import BaseRecipe, Plan

FIGURE_FILE = os.path.join(IMAGES_DIR, "repairs.png")
FIGURE_COLUMNS = 8
VALIDATION_BATCH_SIZE = 256
# The preview OOD set when repair.preview_ood is "": a dataset of the same kind.
_PREVIEW_OOD = {"mnist": "fashion_mnist", "fashion_mnist": "mnist", "cifar10": "cifar100",
                "cifar100": "cifar10"}


class Recipe(BaseRecipe):
    """Builds, saves and tests a repair run of `config` on `data`: trains the repair network
    with `fit`, then chooses T* on held-out images (`choose_test_operator`) before saving."""

    def __init__(self, config, data, run_dir, verbose="auto"):
        super().__init__(config, data, run_dir, verbose)
        self.notes = []
        self.model = None
        self.record_fields = {}

    def record(self):
        return {"score": "repair: d(x, R(T*(x))), higher = more OOD"}

    def build(self, resume=False):
        config, data = self.config, self.data
        self.model, perceptual_info = build_repair_model(config, data.info, self.notes)
        network = self.model.network
        validation_data = None if data.held_images is None else \
            tf.data.Dataset.from_tensor_slices(
                data.held_images.astype(np.float32) / 255.0).batch(VALIDATION_BATCH_SIZE)
        r = config.repair
        self.record_fields = {
            "repair": {"operators": list(self.model.operators),
                       "distance": self.model.default_distance, "perceptual": perceptual_info,
                       "lambda_l2": self.model.lambda_l2,
                       "lambda_perceptual": self.model.lambda_perceptual,
                       "network": {"width": r.width, "depth": r.depth, "skips": r.skips,
                                   "parameters": int(network.count_params())}},
            "notes": self.notes}
        return Plan(self.model, {"network": network, "optimizer": self.model.optimizer,
                                 "rng": self.model.rng},
                    record=self.record_fields, validation_data=validation_data)

    def finish(self, plan):
        config, data = self.config, self.data
        selection = choose_test_operator(self.model, config, data.info, data.held_images,
                                         data.images, config.data_dir or None)
        save_model(self.model, run_path(self.run_dir, MODEL_FILE))
        test_metrics, figure = evaluate_test(self.model, config, data.info, self.notes)
        if figure is not None:
            _write_figure(self.run_dir, figure)
        repair = dict(self.record_fields["repair"], test_operator=self.model.test_operator,
                      selection=selection)
        return test_metrics, {"repair": repair, "notes": self.notes,
                              "figure": FIGURE_FILE if figure is not None else None}


def build_repair_model(config, info, notes):
    """(compiled `RepairModel` of `config.repair` for `info`'s images, perception description).

    Args:
        config: a `Config`.
        info: the ID dataset's `DatasetInfo` (name, image shape).
        notes: a list the notes for run.json are appended to.

    Raises:
        ConfigError: an operator or depth the image size does not allow, a
            missing or mismatched perception network, an unknown layer.
    """
    r = config.repair
    operators = list(r.operators) or variant_operators(r.variant, r.factors, r.box_sizes,
                                                       r.box_offsets)
    perceptual, perceptual_info = _perception(r, info, notes)
    try:
        network = build_repair_unet(info.image_shape, r.width, r.depth, r.skips)
        model = RepairModel(network, operators, perceptual, r.lambda_l2,
                            r.lambda_perceptual if perceptual is not None else 0.0,
                            None if r.test_operator == "auto" else r.test_operator, config.seed)
    except ValueError as error:  # a box outside the image, a depth the size does not allow
        raise ConfigError(str(error)) from error
    model.compile(keras.optimizers.Adam(r.learning_rate))
    model.optimizer.build(network.trainable_variables)
    return model, perceptual_info


def choose_test_operator(model, config, info, heldout, train_images, data_dir=None):
    """Sets `model.test_operator` (T*) and returns how it was chosen (for run.json)."""
    r = config.repair
    if r.test_operator != "auto":
        return {"chosen": model.test_operator, "by": "config (repair.test_operator)"}
    if len(model.operators) == 1:
        model.test_operator = model.operators[0]
        return {"chosen": model.test_operator, "by": "the only operator"}
    rng = np.random.default_rng([config.seed, 11])
    if heldout is not None and len(heldout):
        id_images, id_source = heldout, "validation split"
    else:
        id_images, id_source = train_images, "training images (no validation split)"
    if len(id_images) > r.selection_images:
        id_images = id_images[np.sort(rng.choice(len(id_images), r.selection_images,
                                                 replace=False))]
    try:
        ood_images, ood = selection_ood_images(r.selection_ood, id_images, info.name,
                                               len(id_images), config.seed, data_dir)
    except ValueError as error:  # includes DatasetError
        raise ConfigError(f"repair.selection_ood: {error}") from error
    chosen, aurocs = select_operator(model, id_images, ood_images)
    model.test_operator = chosen
    return {"chosen": chosen, "by": "highest AUROC (ties: the operator listed first)",
            "distance": model.default_distance, "auroc": aurocs,
            "id": {"source": id_source, "count": int(len(id_images))}, "ood": ood}


def evaluate_test(model, config, info, notes):
    """(test metrics, figure rows) on the ID test split and the preview OOD set's test split."""
    from keras_tie.data import DatasetError, load

    data_dir = config.data_dir or None
    try:
        test_set = load(config.dataset, split="test", data_dir=data_dir,
                        limit=config.limit or None)
    except DatasetError as error:
        return {"skipped": str(error)}, None
    test_metrics = {"test_images": len(test_set), "test_operator": model.test_operator,
                    "distance": model.default_distance}
    id_scores = {}
    for distance in ("l2", "perceptual") if model.perceptual is not None else ("l2",):
        id_scores[distance] = score_images(model, test_set.images, distance=distance)
        test_metrics[f"mean_{distance}"] = float(np.mean(id_scores[distance]))

    preview, ood_set = preview_ood_set(config, info, len(test_set), notes)
    if ood_set is not None:
        ood_scores = score_images(model, ood_set.images)
        found = metrics.ood_metrics(id_scores[model.default_distance], ood_scores)
        test_metrics[f"auroc_{preview}"] = found["auroc"]
        test_metrics[f"fpr_at_95_tpr_{preview}"] = found["fpr_at_95_tpr"]
    columns = min(FIGURE_COLUMNS, len(test_set), len(ood_set) if ood_set else FIGURE_COLUMNS)
    rows = [_figure_rows(model, test_set.images[:columns])]
    if ood_set is not None:
        rows.append(_figure_rows(model, ood_set.images[:columns]))
    return test_metrics, np.concatenate(rows) if columns else None


def preview_ood_set(config, info, count, notes):
    """(name, Dataset or None): the OOD set of the test metrics and the figure.

    `repair.preview_ood`, or by default a dataset of the same kind (mnist <->
    fashion_mnist, cifar10 <-> cifar100; else mnist for grayscale, cifar10
    for colour), converted to the ID shape; uniform noise when that one is
    not available.
    """
    from keras_tie.data import DatasetError, load

    name = config.repair.preview_ood or _PREVIEW_OOD.get(
        info.name, "mnist" if info.image_shape[-1] == 1 else "cifar10")
    if name == info.name:
        name = "uniform"
    try:
        if name in ("gaussian", "uniform", "sphere"):
            return name, load(name, "test", like=info.image_shape, count=count,
                              seed=config.seed)
        return name, load(name, "test", data_dir=config.data_dir or None, limit=count,
                          target_shape=info.image_shape)
    except DatasetError as error:
        notes.append(f"preview OOD set {name!r} not available ({error}); using uniform noise")
        return "uniform", load("uniform", "test", like=info.image_shape, count=count,
                               seed=config.seed)


def _perception(r, info, notes):
    """(PerceptualDistance or None, its description for run.json)."""
    if not r.perceptual:
        notes.append("no perception network (repair.perceptual is empty): trained on L2 alone "
                     "and scored by L2, the paper's weakest distance (Table IV). Set "
                     "repair.perceptual to a classifier run folder of this dataset for the "
                     "perceptual distance.")
        return None, None
    try:
        network = load_perception_network(r.perceptual)
        shape = tuple(int(d) for d in network.inputs[0].shape[1:])
        if shape != tuple(info.image_shape):
            raise ValueError(
                f"The perception network takes {shape} images but {info.name} images are "
                f"{tuple(info.image_shape)}. Received: repair.perceptual={r.perceptual!r}. Use a "
                "classifier trained on this dataset.")
        distance = PerceptualDistance.from_network(network, r.layers or None)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    described = {"source": os.path.abspath(r.perceptual), "model": network.name,
                 "layers": list(distance.layer_names), "layer_weights": "uniform (1 each)"}
    source_run = run_path(r.perceptual, RUN_FILE)
    if os.path.isdir(r.perceptual) and os.path.isfile(source_run):
        source = read_json(source_run)
        described.update(run_method=source.get("method"), run_dataset=source.get("dataset"))
        if source.get("dataset") != info.name:
            notes.append(f"the perception network was trained on {source.get('dataset')!r}, "
                         f"not on the in-distribution {info.name!r}")
    return distance, described


def _figure_rows(model, images):
    """[3, n, H, W, C]: original, eroded and repaired images (float in [0, 1])."""
    x = tf.constant(np.asarray(images, np.float32) / (255.0 if images.dtype == np.uint8 else 1.0))
    x = tf.clip_by_value(x, 0.0, 1.0)  # unclipped Gaussian noise is shown clipped
    return np.stack([x.numpy(), model.erode(x).numpy(), model.repair(x).numpy()])


def _write_figure(run_dir, rows):
    grid = image_grid(rows)
    write_png(os.path.join(run_dir, FIGURE_FILE), grid)
    writer = tf.summary.create_file_writer(os.path.join(run_dir, LOGS_DIR, "repair"))
    with writer.as_default():
        tf.summary.image("original_eroded_repaired", grid[None], step=0)
    writer.flush()
