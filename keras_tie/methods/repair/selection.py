"""Choosing the test operator T* (SR-OOD paper, section IV-D: "We select T* from T by
evaluating on a separate validation set using AUROC").

AUROC needs OOD images too, so the choice uses an OOD set; which one is the
user's (config `repair.selection_ood`) and is recorded in run.json:

- `vflip` (default): the held-out ID images themselves, turned upside down.
  No other dataset is touched, the low-level statistics (colours, edges,
  textures) are exactly those of the ID images and only the semantics change:
  the paper's own CelebA "VFlip" OOD set (Table II).
- a synthetic set (`gaussian`, `uniform`, `sphere`): noise of the ID shape.
  Usually too easy to tell operators apart (every operator may reach AUROC 1).
- a real dataset name: its *training* split, converted to the ID shape, so
  the test split an evaluation reports on is never used to choose. Pick a
  set that is not among the OOD sets you evaluate on, or the evaluation on
  it is optimistic.

The ID side is the run's validation split when it has one (config
`validation_split` > 0), else a seeded sample of the training images (in
sample: their repairs are a little better than those of unseen ID images,
for every operator alike). Ties go to the operator listed first.
"""

import numpy as np

from keras_tie import metrics
from keras_tie.methods.repair.detector import RepairDistance

VFLIP = "vflip"


def score_images(model, images, operator=None, distance=None, batch_size=256):
    """The repair distance of every image (numpy `[N]`); higher = more OOD."""
    return RepairDistance(model, operator, distance).score(images, batch_size=batch_size)


def select_operator(model, id_images, ood_images, operators=None, distance=None,
                    batch_size=256):
    """(T*, {operator: AUROC}): the operator whose repair distance best separates the sets.

    Args:
        model: a `RepairModel`.
        id_images, ood_images: held-out ID and OOD images (uint8 or float in [0, 1]).
        operators: the candidates (default the model's training set).
        distance: `perceptual` or `l2` (default the model's).
    """
    aurocs = {}
    for operator in operators or model.operators:
        aurocs[operator] = metrics.auroc(
            score_images(model, id_images, operator, distance, batch_size),
            score_images(model, ood_images, operator, distance, batch_size))
    best = max(aurocs, key=aurocs.get)  # max keeps the first of equal values
    return best, aurocs


def selection_ood_images(name, id_images, id_dataset, count, seed=0, data_dir=None):
    """(images, description) of the OOD side of the selection; see the module docstring.

    Args:
        name: `vflip`, a synthetic set or a dataset name.
        id_images: the held-out ID images (`[N, H, W, C]`, uint8 or float).
        id_dataset: the ID dataset's name (refused as `name`).
        count: images to draw (real and synthetic sets).
        seed: seed of the synthetic sets.
        data_dir: local data directory.
    """
    from keras_tie.data import load, registry

    image_shape = tuple(int(d) for d in id_images.shape[1:])
    if name == VFLIP:
        return np.ascontiguousarray(id_images[:, ::-1]), {
            "name": VFLIP, "source": "the held-out ID images, flipped upside down",
            "count": int(len(id_images))}
    spec = registry.resolve(name)
    if spec.name == id_dataset:
        raise ValueError(f"The selection OOD set is the in-distribution dataset. Received: "
                         f"repair.selection_ood={name!r}. Use vflip, a noise set or another "
                         "dataset.")
    if spec.kind == registry.SYNTHETIC:
        dataset = load(name, "test", like=image_shape, count=count, seed=seed)
        return dataset.images, {"name": name, "source": f"synthetic, seed {seed}",
                                "count": int(len(dataset))}
    dataset = load(name, "train", data_dir=data_dir, limit=count, target_shape=image_shape)
    return dataset.images, {"name": name, "source": f"{name} train split, converted to "
                                                    f"{list(image_shape)}",
                            "count": int(len(dataset))}
