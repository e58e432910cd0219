"""Image datasets whose labels are not (only) their class folders: Tiny ImageNet and DTD.

Tiny ImageNet (tiny-imagenet-200): train/<wnid>/images/*.JPEG; the labelled
validation set val/images/*.JPEG with val/val_annotations.txt (file, wnid, box)
serves as the test split, since the official test set has no labels.

DTD (dtd-r1.0.1): dtd/images/<class>/*.jpg; with dtd/labels/train1.txt,
val1.txt and test1.txt present, the official split 1 is used (train = train1 +
val1, test = test1), otherwise a stratified 80/20 split.
"""

import numpy as np

from keras_tie.data import decode, folders, splits
from keras_tie.data.dataset import make_dataset
from keras_tie.data.errors import CorruptDataError, DatasetNotFoundError

_TINY_TEXTS = ("val_annotations.txt", "wnids.txt")
_DTD_SPLIT_FILES = {"train": ("train1.txt", "val1.txt"), "test": ("test1.txt",)}


def read_tiny_imagenet(path, name, split):
    """One split of tiny-imagenet-200 (folder or zip): dict {split: `Dataset`}."""

    def keep(member):
        parts = member.split("/")
        if split == "train":
            return len(parts) >= 4 and parts[-4] == "train" and parts[-2] == "images"
        return len(parts) >= 3 and parts[-3] == "val" and parts[-2] == "images"

    tree = folders.read_tree(path, keep=keep, text_names=_TINY_TEXTS, channels=3)
    if not tree.images:
        raise DatasetNotFoundError(
            f"{path} holds no Tiny ImageNet {split} images "
            "(expected tiny-imagenet-200/train/<wnid>/images/*.JPEG and "
            "tiny-imagenet-200/val/images/*.JPEG)."
        )
    wnids_text = _text(tree, "wnids.txt")
    if split == "train":
        members = sorted(tree.images)
        wnids = [member.split("/")[-3] for member in members]
    else:
        annotations = _text(tree, "val_annotations.txt")
        if annotations is None:
            raise DatasetNotFoundError(
                f"{path} lacks val/val_annotations.txt, which labels the test split."
            )
        by_file = dict(line.split("\t")[:2] for line in annotations.splitlines() if line.strip())
        members = sorted(tree.images)
        unlabelled = [m for m in members if m.rsplit("/", 1)[-1] not in by_file]
        if unlabelled:
            raise CorruptDataError(
                f"{path}: val_annotations.txt has no label for {len(unlabelled)} image(s), "
                f"e.g. {unlabelled[0]}."
            )
        wnids = [by_file[m.rsplit("/", 1)[-1]] for m in members]
    class_names = sorted(wnids_text.split()) if wnids_text else sorted(set(wnids))
    index = {wnid: i for i, wnid in enumerate(class_names)}
    unknown = sorted(set(wnids) - set(index))
    if unknown:
        raise CorruptDataError(f"{path}: classes {unknown[:5]} are not in wnids.txt.")
    images = decode.stack_images([tree.images[m] for m in members], members, path)
    labels = np.array([index[w] for w in wnids], dtype=np.int64)
    return {split: make_dataset(name, split, images, labels, class_names, str(path), (64, 64, 3))}


def read_dtd(path, name, size):
    """Both splits of DTD (folder or archive), every image centre-cropped and resized to `size`."""
    text_names = tuple(f for files in _DTD_SPLIT_FILES.values() for f in files)
    tree = folders.read_tree(path, text_names=text_names, channels=3, size=size)
    groups = folders.class_layout(tree.images)
    items = sorted(groups.get(None, []), key=lambda item: item[1])
    if not items:
        raise DatasetNotFoundError(
            f"{path} holds no DTD images (expected dtd/images/<class>/*.jpg)."
        )
    class_names = sorted({cls for cls, _ in items})
    index = {cls: i for i, cls in enumerate(class_names)}
    members = [member for _, member in items]
    images = decode.stack_images([tree.images[m] for m in members], members, path)
    labels = np.array([index[cls] for cls, _ in items], dtype=np.int64)
    lists = {split: [_text(tree, f) for f in files] for split, files in _DTD_SPLIT_FILES.items()}
    if all(text is not None for texts in lists.values() for text in texts):
        # Split files name images as <class>/<file>, the last two parts of a member path.
        keys = np.array(["/".join(m.split("/")[-2:]) for m in members])
        chosen = {
            split: np.flatnonzero(np.isin(keys, "\n".join(texts).split()))
            for split, texts in lists.items()
        }
    else:
        chosen = dict(zip(("train", "test"), splits.stratified_split(labels)))
    shape = (size, size, 3)
    return {
        split: make_dataset(name, split, images[idx], labels[idx], class_names, str(path), shape)
        for split, idx in chosen.items()
    }


def _text(tree, base_name):
    for member, text in tree.texts.items():
        if member.rsplit("/", 1)[-1] == base_name:
            return text
    return None
