"""Class sub-folders of images, plain or inside an archive, to labelled arrays.

Layouts understood (any single wrapping folder, such as `cifar10/`, is skipped):

    train/<class>/**/<image>, test/<class>/**/<image>   -> the archive's own split
    <class>/**/<image>                                   -> a stratified 80/20 split

Classes are the sorted sub-folder names found in all splits together, so a
label means the same class in train and test. Images are sorted by path before
labelling, so the order does not depend on the order inside the archive.
"""

import warnings

import numpy as np

from keras_tie.data import archive, decode, splits
from keras_tie.data.dataset import make_dataset
from keras_tie.data.errors import CorruptDataError, DatasetNotFoundError

# Sub-folders that name a split; validation folders are not a split of their own.
_SPLIT_DIRS = {"train": "train", "test": "test"}
_IGNORED_SPLIT_DIRS = ("val", "valid", "validation")


class Tree:
    """The decoded images (and small text files) of a folder or archive.

    Attributes:
        images: dict relative path -> uint8 array `[H, W, C]`.
        texts: dict relative path -> str, for the text files asked for.
        skipped: relative paths of images that could not be decoded.
    """

    def __init__(self):
        self.images = {}
        self.texts = {}
        self.skipped = []


def read_tree(path, keep=None, text_names=(), channels=None, size=None, skip_unreadable=False):
    """Decodes every image under `path` (a folder or archive) in one pass.

    Args:
        path: folder or archive.
        keep: `callable(relative_path) -> bool` selecting images; `None` keeps all.
        text_names: base names of text files to keep (annotation files).
        channels, size: passed to `decode.decode_image`.
        skip_unreadable: leave out images Pillow cannot decode, listed in
            `Tree.skipped` and reported with a warning, instead of raising.
    """
    tree = Tree()

    def wanted(name):
        if name.rsplit("/", 1)[-1] in text_names:
            return True
        return decode.is_image(name) and (keep is None or keep(name))

    for name, data in archive.iter_files(path, wanted):
        if not decode.is_image(name):
            tree.texts[name] = data.decode("utf-8", errors="replace")
            continue
        try:
            tree.images[name] = decode.decode_image(data, f"{path}:{name}", channels, size)
        except CorruptDataError:
            if not skip_unreadable:
                raise
            tree.skipped.append(name)
    if tree.skipped:
        warnings.warn(
            f"{path}: skipped {len(tree.skipped)} unreadable image(s), "
            f"e.g. {tree.skipped[:3]}.",
            stacklevel=2,
        )
    return tree


def strip_wrappers(paths, wrappers=None):
    """`paths` with the folders common to all of them removed, down to <split or class>/<file>.

    A common first folder is removed while every path keeps at least two parts
    and that folder is not a split name (and, when `wrappers` is given, is one
    of those names).
    """
    parts = [path.split("/") for path in paths]
    depth = 0
    while parts and all(len(p) - depth > 2 for p in parts):
        first = {p[depth] for p in parts}
        if len(first) != 1:
            break
        name = first.pop()
        if name in _SPLIT_DIRS or (wrappers is not None and name not in wrappers):
            break
        depth += 1
    return {path: "/".join(p[depth:]) for path, p in zip(paths, parts)}


def class_layout(paths, wrappers=None):
    """Groups image paths: dict split (`"train"`, `"test"`, or `None`) -> list of (class, path).

    The split is `None` when the tree has no train/ or test/ sub-folders;
    `wrappers` is passed to `strip_wrappers`.
    """
    stripped = strip_wrappers(sorted(paths), wrappers)
    firsts = {short.split("/")[0] for short in stripped.values()}
    split_dirs = set(_SPLIT_DIRS) | set(_IGNORED_SPLIT_DIRS)
    has_splits = bool(firsts & set(_SPLIT_DIRS)) and firsts <= split_dirs
    groups = {}
    for path, short in stripped.items():
        parts = short.split("/")
        if has_splits:
            if parts[0] not in _SPLIT_DIRS or len(parts) < 3:
                continue
            split, cls = _SPLIT_DIRS[parts[0]], parts[1]
        else:
            if len(parts) < 2:
                continue
            split, cls = None, parts[0]
        groups.setdefault(split, []).append((cls, path))
    return groups


def read_class_folders(
    path,
    name,
    class_names=None,
    image_shape=None,
    size=None,
    skip_unreadable=False,
    split=None,
    wrappers=None,
):
    """Every split of a class-folder tree at `path`: dict split -> `Dataset`.

    Args:
        path: folder or archive.
        name: dataset name for the `DatasetInfo`.
        class_names: the expected classes in label order; `None` takes the
            sorted sub-folder names.
        image_shape: the expected `(H, W, C)`; `None` accepts what the images are
            (all of one size; gray tiled to RGB if any image is RGB).
        size: centre-crop and resize every image to `size x size` first.
        skip_unreadable: skip (and report) undecodable images instead of raising.
        split: the split a tree without train/ and test/ sub-folders holds
            entirely (omniglot's images_background is train); `None` splits such
            a tree 80/20 with `splits.stratified_split`.
        wrappers: the only folder names to skip as wrappers (omniglot's
            images_background, so that a single alphabet is not skipped);
            `None` skips any single common folder.
    """
    channels = image_shape[2] if image_shape is not None else None
    tree = read_tree(path, channels=channels, size=size, skip_unreadable=skip_unreadable)
    groups = class_layout(tree.images, wrappers)
    if not groups:
        raise DatasetNotFoundError(
            f"{path} holds no images in class sub-folders; expected <class>/<image> or "
            "train/<class>/<image> and test/<class>/<image> (images: "
            f"{', '.join(decode.IMAGE_SUFFIXES)})."
        )
    found = sorted({cls for items in groups.values() for cls, _ in items})
    class_names = tuple(class_names) if class_names is not None else tuple(found)
    unexpected = sorted(set(found) - set(class_names))
    if unexpected:
        raise CorruptDataError(
            f"{path}: unexpected class folder(s) {unexpected[:5]}; {name} has the classes "
            f"{list(class_names)}."
        )
    index = {cls: i for i, cls in enumerate(class_names)}
    by_split = {}
    for part, items in groups.items():
        items = sorted(items, key=lambda item: item[1])
        paths = [p for _, p in items]
        images = decode.stack_images([tree.images[p] for p in paths], paths, path)
        labels = np.array([index[cls] for cls, _ in items], dtype=np.int64)
        by_split[part] = (images, labels)
    if None in by_split and split is not None:
        by_split[split] = by_split.pop(None)
    elif None in by_split:
        images, labels = by_split.pop(None)
        train, test = splits.stratified_split(labels)
        by_split = {"train": (images[train], labels[train]), "test": (images[test], labels[test])}
    source = str(path)
    return {
        key: make_dataset(name, key, images, labels, class_names, source, image_shape, tree.skipped)
        for key, (images, labels) in by_split.items()
    }

