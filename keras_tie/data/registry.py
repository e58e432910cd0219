"""The names keras-tie knows: kind, class names, image shape and tfds name of each.

This module knows names only. Where a dataset lives on disk is `local.py`'s
business; how tensorflow-datasets serves it is `tfds_source.py`'s.
"""

import dataclasses
import difflib
import os

from keras_tie.data.errors import DatasetError, UnknownDatasetError

REAL = "real"
SYNTHETIC = "synthetic"
EMBEDDED = "embedded"
USER = "user"

SPLITS = ("train", "test")

# DatasetInfo.source of datasets that do not come from a local file.
TFDS_SOURCE = "tensorflow-datasets"
SYNTHETIC_SOURCE = "synthetic"
SKLEARN_SOURCE = "scikit-learn"

# User datasets are named by a prefix and a path: folder:/data/cats, idx:/data/my_mnist.
FOLDER_PREFIX = "folder:"
IDX_PREFIX = "idx:"

_DIGITS = tuple(str(d) for d in range(10))
_CIFAR10 = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
_FASHION_MNIST = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
# kmnist_classmap.csv of the KMNIST release, romanised.
_KMNIST = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
# EMNIST letters merges upper and lower case: published label 1 is "Aa", shown as "A".
_LETTERS = tuple(chr(ord("A") + i) for i in range(26))
# fine_label_names of cifar-100-python/meta; alphabetical, so the sorted class
# folders of the PNG release give the same labels.
_CIFAR100 = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle",
    "bicycle", "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel",
    "can", "castle", "caterpillar", "cattle", "chair", "chimpanzee", "clock",
    "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster",
    "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse",
    "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine",
    "possum", "rabbit", "raccoon", "ray", "road", "rocket", "rose", "sea",
    "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip",
    "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip
# notMNIST: the letters A to J, rendered in many fonts.
_NOTMNIST = tuple(chr(ord("A") + i) for i in range(10))

# DTD images vary in size (300x300 to 640x640); they are centre-cropped to a
# square and resized to this size so that they stack and match CIFAR-sized models.
DTD_IMAGE_SIZE = 32


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What keras-tie knows about a dataset name before reading any file.

    Args:
        name: the name users pass to `load`.
        kind: `"real"`, `"synthetic"`, `"embedded"` or `"user"`.
        summary: one line for `keras-tie data list`.
        class_names: the class names, or `None` when they come from the source
            (tiny_imagenet's wnids, omniglot's alphabets, user folders).
        image_shape: `(H, W, C)` as loaded, or `None` when it depends on the source.
        tfds_name: the tensorflow-datasets name, or `None` when tfds lacks it.
        path: the path of a user dataset (`folder:PATH`, `idx:PATH`), else `None`.
        transposed: the published images are stored transposed (EMNIST), in
            the local files and in tfds alike.
        label_offset: subtracted from the published labels to start them at 0
            (EMNIST letters are numbered 1..26).
    """

    name: str
    kind: str
    summary: str
    class_names: tuple = None
    image_shape: tuple = None
    tfds_name: str = None
    path: str = None
    transposed: bool = False
    label_offset: int = 0


_GRAY28, _RGB32 = (28, 28, 1), (32, 32, 3)
_SPECS = (
    DatasetSpec("mnist", REAL, "handwritten digits", _DIGITS, _GRAY28, "mnist"),
    DatasetSpec(
        "fashion_mnist", REAL, "Zalando clothing photos", _FASHION_MNIST, _GRAY28, "fashion_mnist"
    ),
    DatasetSpec("cifar10", REAL, "10 object classes", _CIFAR10, _RGB32, "cifar10"),
    DatasetSpec("cifar100", REAL, "100 classes (fine labels)", _CIFAR100, _RGB32, "cifar100"),
    DatasetSpec(
        "svhn_cropped", REAL, "street-view house numbers", _DIGITS, _RGB32, "svhn_cropped"
    ),
    DatasetSpec("kmnist", REAL, "cursive Japanese characters", _KMNIST, _GRAY28, "kmnist"),
    DatasetSpec(
        "emnist_letters",
        REAL,
        "handwritten letters A-Z",
        _LETTERS,
        _GRAY28,
        "emnist/letters",
        transposed=True,
        label_offset=1,
    ),
    DatasetSpec("tiny_imagenet", REAL, "200 ImageNet classes at 64x64", None, (64, 64, 3), None),
    DatasetSpec(
        "omniglot", REAL, "characters of 50 alphabets", None, (105, 105, 1), "omniglot"
    ),
    DatasetSpec(
        "dtd",
        REAL,
        f"describable textures, resized to {DTD_IMAGE_SIZE}x{DTD_IMAGE_SIZE}",
        None,
        (DTD_IMAGE_SIZE, DTD_IMAGE_SIZE, 3),
        "dtd",
    ),
    DatasetSpec("notmnist", REAL, "letters A-J in many fonts (notMNIST_small)", _NOTMNIST, _GRAY28),
    DatasetSpec("gaussian", SYNTHETIC, "pixels from N(0.5, 1), unclipped"),
    DatasetSpec("uniform", SYNTHETIC, "pixels from U[0, 1]"),
    DatasetSpec("sphere", SYNTHETIC, "points on the sphere of the reference's largest norm"),
    DatasetSpec(
        "digits", EMBEDDED, "scikit-learn 8x8 digits upscaled to 28x28, offline", _DIGITS, _GRAY28
    ),
)
_BY_NAME = {spec.name: spec for spec in _SPECS}

USER_SPECS = (
    DatasetSpec(
        FOLDER_PREFIX + "PATH", USER, "class sub-folders of images, or a .tar/.tar.gz/.zip of them"
    ),
    DatasetSpec(IDX_PREFIX + "PATH", USER, "a folder of IDX files (train-* and t10k-*/test-*)"),
)


def dataset_names():
    """The names `load` accepts, besides `folder:PATH` and `idx:PATH`."""
    return [spec.name for spec in _SPECS]


def all_specs():
    """Every registered spec, then the two user templates."""
    return list(_SPECS) + list(USER_SPECS)


def resolve(name):
    """The `DatasetSpec` of `name`; raises `UnknownDatasetError` listing the known names."""
    if not isinstance(name, str) or not name:
        raise UnknownDatasetError(
            f"A dataset name must be a non-empty string. Received: name={name!r}. {_known_names()}"
        )
    for prefix in (FOLDER_PREFIX, IDX_PREFIX):
        if name.startswith(prefix):
            path = name[len(prefix) :]
            if not path:
                raise UnknownDatasetError(
                    f"{prefix}PATH needs a path after the colon. Received: name={name!r}"
                )
            path = os.path.abspath(os.path.expanduser(path))
            summary = USER_SPECS[0 if prefix == FOLDER_PREFIX else 1].summary
            return DatasetSpec(prefix + path, USER, summary, path=path)
    spec = _BY_NAME.get(name) or _BY_NAME.get(name.lower().replace("-", "_"))
    if spec is not None:
        return spec
    close = difflib.get_close_matches(name.lower(), dataset_names(), n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownDatasetError(f"Unknown dataset. Received: name={name!r}.{hint} {_known_names()}")


def check_split(split):
    """`split` itself if it is `"train"` or `"test"`, else a `DatasetError`."""
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {list(SPLITS)}. Received: split={split!r}")
    return split


def _known_names():
    return (
        f"Known names: {', '.join(dataset_names())}; "
        f"or {FOLDER_PREFIX}PATH (class sub-folders of images, or an archive of them) "
        f"or {IDX_PREFIX}PATH (a folder of IDX files)."
    )
