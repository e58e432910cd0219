"""Where each dataset lives in a local data directory, and which reader reads it.

A data directory (argument `data_dir`, else $KERAS_TIE_DATA_DIR) holds one
sub-folder per dataset, named after it, with the files in their usual
published formats:

    mnist/, fashion_mnist/, kmnist/   train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
                                      t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz
                                      (gzipped or plain)
    emnist_letters/                   emnist-letters-{train,test}-{images-idx3,labels-idx1}-ubyte.gz
    cifar10/                          cifar-10-python.tar.gz (or cifar-10-batches-py/), or an
                                      archive (.tar.gz/.tar/.zip) or folder of train/<class>/*.png
                                      and test/<class>/*.png
    cifar100/                         cifar-100-python.tar.gz (fine labels), or PNG class folders
                                      as for cifar10 (fine class names)
    svhn_cropped/                     train_32x32.mat, test_32x32.mat
    tiny_imagenet/                    tiny-imagenet-200/ or tiny-imagenet-200.zip
    dtd/                              dtd-r1.0.1.tar.gz or dtd/ (dtd/images/<class>/*.jpg)
    notmnist/                         notMNIST_small/ or notMNIST_small.tar.gz / .tar / .zip
    omniglot/                         images_background (train) and images_evaluation (test),
                                      each a folder or .zip; class = alphabet

An archive whose file name says only "train" (or only "test") is taken to hold
only that split. Archives are read without extracting them.
"""

import dataclasses
import functools
import os

import numpy as np

from keras_tie.data import archive, cifar, folders, idx, image_layouts, registry, svhn
from keras_tie.data.dataset import make_dataset
from keras_tie.data.errors import CorruptDataError

DATA_DIR_ENV = "KERAS_TIE_DATA_DIR"

# File name stems of the IDX datasets, per split: (images, labels).
_MNIST_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_EMNIST_STEMS = {
    split: (
        f"emnist-letters-{split}-images-idx3-ubyte",
        f"emnist-letters-{split}-labels-idx1-ubyte",
    )
    for split in registry.SPLITS
}
_CIFAR10_PYTHON = ("cifar-10-python.tar.gz", "cifar-10-batches-py")
_CIFAR100_PYTHON = ("cifar-100-python.tar.gz", "cifar-100-python")


@dataclasses.dataclass(frozen=True)
class Source:
    """A located source of one dataset: what to read and how.

    Attributes:
        where: the file or folder read (becomes `DatasetInfo.source`).
        files: the files and folders whose size and mtime key the cache.
        read: `callable() -> dict split -> Dataset`; may return more splits than asked.
    """

    where: str
    files: tuple
    read: object


@dataclasses.dataclass(frozen=True)
class Lookup:
    """What `locate` found: a `Source`, or the places it looked at, in words."""

    source: Source = None
    looked: tuple = ()


def resolve_data_dir(data_dir=None):
    """`data_dir`, else $KERAS_TIE_DATA_DIR, else `None` (absolute, `~` expanded)."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV)
    return os.path.abspath(os.path.expanduser(str(chosen))) if chosen else None


def locate(spec, split, data_dir):
    """The local `Source` of `spec`'s `split` under `data_dir`, checking file names only."""
    if spec.kind == registry.USER:
        if spec.name.startswith(registry.FOLDER_PREFIX):
            return _locate_folder(spec)
        return _locate_idx(spec, split)
    if data_dir is None:
        return Lookup(
            looked=(
                f"no local data directory: pass data_dir= or set {DATA_DIR_ENV} to a folder "
                f"with a {spec.name}/ sub-folder holding {expected_files(spec, split)}",
            )
        )
    folder = os.path.join(data_dir, spec.name)
    looked = []
    for description, find in _CANDIDATES[spec.name](split):
        source = find(spec, split, folder)
        if source is not None:
            return Lookup(source=source)
        looked.append(f"{folder}{os.sep} has no {description}")
    if os.path.isdir(folder):
        other = "train" if split == "test" else "test"
        for name in sorted(os.listdir(folder)):
            if archive.is_archive(name) and not _archive_holds(name, split):
                path = os.path.join(folder, name)
                looked.append(f"{path} holds only the {other} split (by its name)")
    return Lookup(looked=tuple(looked))


def expected_files(spec, split="train"):
    """What the local sub-folder of `spec` must hold for `split`, in words, for messages."""
    return " or ".join(description for description, _ in _CANDIDATES[spec.name](split))


# --- IDX datasets -------------------------------------------------------------------


def _idx_candidates(stems):
    def candidates(split):
        image_stem, label_stem = stems[split]
        return [(f"{image_stem}.gz and {label_stem}.gz (gzipped or plain)", _find_idx(stems))]

    return candidates


def _find_idx(stems):
    def find(spec, split, folder):
        image_stem, label_stem = stems[split]
        image_file, label_file = _gz_or_plain(folder, image_stem), _gz_or_plain(folder, label_stem)
        if image_file is None or label_file is None:
            return None
        read = functools.partial(
            _read_idx_split, spec.name, split, image_file, label_file, spec.class_names,
            spec.transposed, spec.label_offset,
        )  # fmt: skip
        return Source(folder, (image_file, label_file), read)

    return find


def _gz_or_plain(folder, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def _read_idx_split(name, split, image_file, label_file, class_names, transposed, label_offset):
    images = idx.read_idx(image_file)
    labels = idx.read_idx(label_file)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.dtype != np.uint8:
        raise CorruptDataError(
            f"{image_file} must hold uint8 images [N, H, W]. "
            f"Received: shape={images.shape}, dtype={images.dtype}"
        )
    if labels.ndim != 1:
        raise CorruptDataError(
            f"{label_file} must hold a 1-D array of labels. Received: shape={labels.shape}"
        )
    if len(images) != len(labels):
        raise CorruptDataError(
            f"{image_file} holds {len(images)} images but {label_file} holds {len(labels)} "
            "labels; they must be the same count."
        )
    if transposed:
        images = np.ascontiguousarray(images.transpose(0, 2, 1, 3))
    labels = labels.astype(np.int64) - label_offset
    source = os.path.dirname(image_file)
    try:
        return {split: make_dataset(name, split, images, labels, class_names, source)}
    except CorruptDataError as error:
        raise CorruptDataError(f"{label_file}: {error}") from error


# --- CIFAR and class-folder archives ---------------------------------------------------


def _cifar_candidates(python_names, batches):
    def find_python(spec, split, folder):
        for python_name in python_names:
            path = os.path.join(folder, python_name)
            if os.path.exists(path):
                read = functools.partial(
                    cifar.read_cifar_python, path, spec.name, spec.class_names, batches
                )
                return Source(path, (path,), read)
        return None

    def candidates(split):
        return [
            (" or ".join(python_names) + " (the CIFAR python version)", find_python),
            (
                "archive (.tar.gz/.tar/.zip) of train/<class>/*.png and test/<class>/*.png",
                functools.partial(_find_archive, exclude=python_names),
            ),
            ("train/<class>/*.png and test/<class>/*.png", _find_split_folder),
        ]

    return candidates


def _find_archive(spec, split, folder, exclude=()):
    """The first archive in `folder` (sorted by name) that may hold `split` of class folders."""
    if not os.path.isdir(folder):
        return None
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name in exclude or not archive.is_archive(name) or not os.path.isfile(path):
            continue
        if _archive_holds(name, split):
            return _class_folder_source(spec, path)
    return None


def _archive_holds(file_name, split):
    lowered = file_name.lower()
    has_train, has_test = "train" in lowered, "test" in lowered
    if has_train != has_test:
        return has_train == (split == "train")
    return True


def _find_split_folder(spec, split, folder):
    if os.path.isdir(os.path.join(folder, split)):
        return _class_folder_source(spec, folder)
    return None


def _class_folder_source(spec, path, **options):
    read = functools.partial(
        folders.read_class_folders, path, spec.name, spec.class_names, spec.image_shape, **options
    )
    return Source(path, (path,), read)


# --- Other real datasets -----------------------------------------------------------------


def _first_existing(folder, names):
    for name in names:
        path = os.path.join(folder, name)
        if os.path.exists(path):
            return path
    return None


def _svhn_candidates(split):
    def find(spec, split, folder):
        path = os.path.join(folder, f"{split}_32x32.mat")
        if not os.path.isfile(path):
            return None
        return Source(path, (path,), functools.partial(_read_svhn_split, path, spec, split))

    return [(f"{split}_32x32.mat", find)]


def _read_svhn_split(path, spec, split):
    return {split: svhn.read_svhn_mat(path, spec.name, split, spec.class_names)}


def _tiny_imagenet_candidates(split):
    names = ("tiny-imagenet-200", "tiny-imagenet-200.zip")

    def find(spec, split, folder):
        path = _first_existing(folder, names)
        if path is None:
            return None
        read = functools.partial(image_layouts.read_tiny_imagenet, path, spec.name, split)
        return Source(path, (path,), read)

    return [("tiny-imagenet-200/ or tiny-imagenet-200.zip", find)]


def _dtd_candidates(split):
    def find(spec, split, folder):
        path = _first_existing(folder, ("dtd-r1.0.1.tar.gz", "dtd", "images"))
        if path is None:
            return None
        path = folder if os.path.basename(path) == "images" else path
        read = functools.partial(image_layouts.read_dtd, path, spec.name, registry.DTD_IMAGE_SIZE)
        return Source(path, (path,), read)

    return [("dtd-r1.0.1.tar.gz or dtd/images/<class>/*.jpg", find)]


def _notmnist_candidates(split):
    names = ("notMNIST_small", "notMNIST_small.tar.gz", "notMNIST_small.tar", "notMNIST_small.zip")

    def find(spec, split, folder):
        path = _first_existing(folder, names)
        if path is None:
            return None
        # The published notMNIST_small holds a few empty or truncated PNGs.
        return _class_folder_source(spec, path, skip_unreadable=True)

    return [("notMNIST_small/<letter>/*.png or notMNIST_small.tar.gz/.tar/.zip", find)]


def _omniglot_candidates(split):
    stem = "images_background" if split == "train" else "images_evaluation"

    def find(spec, split, folder):
        path = _first_existing(folder, (stem, stem + ".zip"))
        if path is None:
            return None
        read = functools.partial(
            folders.read_class_folders, path, spec.name, None, spec.image_shape,
            split=split, wrappers=(stem,),
        )  # fmt: skip
        return Source(path, (path,), read)

    return [(f"{stem}/ or {stem}.zip (<alphabet>/<character>/*.png)", find)]


# dataset name -> callable(split) -> [(description, find(spec, split, folder) -> Source | None)]
_CANDIDATES = {
    "mnist": _idx_candidates(_MNIST_STEMS),
    "fashion_mnist": _idx_candidates(_MNIST_STEMS),
    "kmnist": _idx_candidates(_MNIST_STEMS),
    "emnist_letters": _idx_candidates(_EMNIST_STEMS),
    "cifar10": _cifar_candidates(_CIFAR10_PYTHON, cifar.CIFAR10_BATCHES),
    "cifar100": _cifar_candidates(_CIFAR100_PYTHON, cifar.CIFAR100_BATCHES),
    "svhn_cropped": _svhn_candidates,
    "tiny_imagenet": _tiny_imagenet_candidates,
    "dtd": _dtd_candidates,
    "notmnist": _notmnist_candidates,
    "omniglot": _omniglot_candidates,
}


# --- User datasets ------------------------------------------------------------------------


def _locate_folder(spec):
    path = spec.path
    if os.path.isdir(path) or (os.path.isfile(path) and archive.is_archive(path)):
        return Lookup(source=_class_folder_source(spec, path))
    if os.path.isfile(path):
        suffixes = list(archive.ARCHIVE_SUFFIXES)
        return Lookup(looked=(f"{path}: not a folder nor an archive with a suffix in {suffixes}",))
    expected = "a folder of class sub-folders, or an archive of one"
    return Lookup(looked=(f"{path}: not found (expected {expected})",))


def _locate_idx(spec, split):
    folder = spec.path
    if not os.path.isdir(folder):
        return Lookup(looked=(f"{folder}: not found (expected a folder of IDX files)",))
    files = _idx_files(folder)
    image_file, label_file = files[split]
    if image_file is None or label_file is None:
        words = "train" if split == "train" else "t10k or test"
        return Lookup(
            looked=(
                f"{folder}: no {split} IDX pair: expected one file name containing {words!r} "
                "and 'images' (or idx3), one containing it and 'labels' (or idx1); found "
                f"{sorted(os.listdir(folder))}",
            )
        )
    label_files = [labels for _, labels in files.values() if labels is not None]
    read = functools.partial(_read_user_idx, spec.name, split, image_file, label_file, label_files)
    return Lookup(source=Source(folder, (image_file, *label_files), read))


def _idx_files(folder):
    """dict split -> (images file or None, labels file or None), told apart by file name."""
    found = {split: [None, None] for split in registry.SPLITS}
    for name in sorted(os.listdir(folder)):
        lowered = name.lower()
        if lowered.startswith(".") or not os.path.isfile(os.path.join(folder, name)):
            continue
        if "train" in lowered:
            split = "train"
        elif "t10k" in lowered or "test" in lowered:
            split = "test"
        else:
            continue
        if "images" in lowered or "idx3" in lowered:
            kind = 0
        elif "labels" in lowered or "idx1" in lowered:
            kind = 1
        else:
            continue
        if found[split][kind] is None:
            found[split][kind] = os.path.join(folder, name)
    return {split: tuple(pair) for split, pair in found.items()}


def _read_user_idx(name, split, image_file, label_file, label_files):
    # Classes are 0..max label over both splits, so a label means the same in train and test;
    # a class number no image has is refused: one stray label must not add empty classes.
    used = np.unique(np.concatenate([idx.read_idx(path).ravel() for path in label_files]))
    top = int(used.max(initial=0))
    if len(used) < top + 1:
        # The first missing class numbers lie below len(used) + 10: no array up to `top`.
        missing = np.setdiff1d(np.arange(min(top + 1, len(used) + 11)), used)
        shown = ", ".join(str(m) for m in missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise CorruptDataError(
            f"{', '.join(label_files)}: the labels must number the classes 0..K-1 without gaps, "
            f"but they go up to {top} while no image has label {shown} ({len(used)} distinct "
            "labels). Renumber the labels, or remove the images with stray labels.")
    class_names = tuple(str(i) for i in range(top + 1))
    return _read_idx_split(name, split, image_file, label_file, class_names, False, 0)
