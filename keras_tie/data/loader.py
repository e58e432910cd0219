"""`load`: a dataset name in, a `Dataset` out, from the first source that has it.

Real datasets come from, in order:

1. the local data directory (`data_dir`, else $KERAS_TIE_DATA_DIR), through the
   on-disk cache of decoded arrays (`cache_dir`, else $KERAS_TIE_CACHE_DIR, else
   ~/.cache/keras_tie);
2. tensorflow-datasets: a copy already prepared in its data dir, else a download
   when the machine is online (checked with one short probe, so an offline
   machine gets a `DatasetNotFoundError` in seconds, not after minutes of retries).
"""

import numpy as np

from keras_tie.data import cache, digits, local, registry, splits, synthetic, tfds_source
from keras_tie.data.convert import convert_images
from keras_tie.data.errors import DatasetError, DatasetNotFoundError


def load(
    name,
    split="train",
    *,
    data_dir=None,
    cache_dir=None,
    limit=None,
    target_shape=None,
    like=None,
    count=None,
    seed=None,
    radius=None,
    clip=False,
):
    """Loads one split of a dataset by name.

    Args:
        name: a name from `dataset_names()` (`"mnist"`, `"cifar10"`, `"gaussian"`,
            `"digits"`, ...), `"folder:PATH"` (class sub-folders of images, or a
            .tar/.tar.gz/.zip of them) or `"idx:PATH"` (a folder of IDX files).
        split: `"train"` or `"test"`.
        data_dir: the local data directory; default $KERAS_TIE_DATA_DIR.
        cache_dir: where decoded arrays are cached; default $KERAS_TIE_CACHE_DIR,
            else ~/.cache/keras_tie.
        limit: keep at most this many examples, spread evenly over the classes
            and taken in file order (`splits.stratified_subset`): deterministic,
            for quick runs and tests. The full split is still read and cached.
        target_shape: `(H, W, C)` to convert the images to with `convert_images`
            (float32 in [0, 1] units then); `None` keeps them as stored.
        like: synthetic sets only: the reference `Dataset`, `DatasetInfo` or
            `(H, W, C)` tuple whose shape (and, for `sphere`, largest norm) they take.
        count: synthetic sets only: number of images (default 10,000).
        seed: synthetic sets only: random seed (default 0).
        radius: `sphere` only: the radius instead of the reference's largest norm.
        clip: `gaussian` only: clip to [0, 1] (default `False`, as in the TIE paper).

    Returns:
        A `Dataset`.

    Raises:
        UnknownDatasetError: `name` is not known (the message lists the known names).
        DatasetNotFoundError: no source has the dataset; the message lists the
            places looked at and what to put where.
        CorruptDataError: a source file is truncated, damaged or inconsistent.

    Example:

    ```python
    train = load("mnist", split="train")
    ood = load("cifar10", split="test", target_shape=train.info.image_shape)
    noise = load("sphere", split="test", like=train, count=1000, seed=1)
    ```
    """
    spec = registry.resolve(name)
    registry.check_split(split)
    if spec.kind == registry.SYNTHETIC:
        dataset = synthetic.generate(
            spec.name, split, like=like, count=count, seed=0 if seed is None else seed,
            radius=radius, clip=clip, image_shape=target_shape,
        )  # fmt: skip
    else:
        clip = clip or None  # the default False is no request
        _reject_synthetic_options(spec, like=like, count=count, seed=seed, radius=radius, clip=clip)
        if spec.kind == registry.EMBEDDED:
            dataset = digits.load_digits(split)
        else:
            dataset = _load_stored(spec, split, data_dir, cache_dir)
    if limit is not None:
        keep = splits.stratified_subset(dataset.labels, limit)
        if len(keep) < len(dataset):
            dataset = dataset.with_arrays(dataset.images[keep], dataset.labels[keep])
    if target_shape is not None and tuple(target_shape) != dataset.info.image_shape:
        images = convert_images(dataset.images, target_shape)
        dataset = dataset.with_arrays(images, dataset.labels, image_shape=images.shape[1:])
    return dataset


def _reject_synthetic_options(spec, **options):
    given = {key: value for key, value in options.items() if value is not None}
    if given:
        received = ", ".join(f"{key}={value!r}" for key, value in given.items())
        raise DatasetError(
            f"{', '.join(given)} only apply to the synthetic sets (gaussian, uniform, sphere), "
            f"not to {spec.name!r}. Received: {received}"
        )


def _load_stored(spec, split, data_dir, cache_dir):
    """A real or user dataset from local files, else tensorflow-datasets, through the cache."""
    data_dir = local.resolve_data_dir(data_dir)
    cache_dir = cache.resolve_cache_dir(cache_dir)
    lookup = local.locate(spec, split, data_dir)
    looked = list(lookup.looked)
    if lookup.source is not None:
        source = lookup.source
        dataset = _through_cache(cache_dir, spec, split, source.files, source.read)
        if dataset is not None:
            return dataset
        looked.append(f"{source.where}: has no {split} split")
    if spec.tfds_name is None:
        if spec.kind != registry.USER:
            looked.append(f"tensorflow-datasets: has no {spec.name}")
    else:
        available, _, reason = tfds_source.availability(spec)
        if available:
            return _load_tfds(cache_dir, spec, split)
        looked.append(reason)
    raise DatasetNotFoundError(_not_found_message(spec, split, data_dir, looked))


def _through_cache(cache_dir, spec, split, files, read):
    """The cached split, else `read()` (dict split -> Dataset) with every split cached."""
    entry = cache.entry_path(cache_dir, spec.name, split, files)
    dataset = cache.read(entry, spec.name, split)
    if dataset is not None:
        return dataset
    datasets = read()
    for other, other_dataset in datasets.items():
        if other_dataset.images.dtype == np.uint8:
            cache.write(cache.entry_path(cache_dir, spec.name, other, files), other_dataset)
    return datasets.get(split)


def _load_tfds(cache_dir, spec, split):
    prepared = tfds_source.prepared_dir(spec.tfds_name)
    if prepared is not None:
        read = lambda: {split: tfds_source.load(spec, split)}  # noqa: E731
        return _through_cache(cache_dir, spec, split, (prepared,), read)
    dataset = tfds_source.load(spec, split)  # downloads and prepares
    prepared = tfds_source.prepared_dir(spec.tfds_name)
    if prepared is not None:
        cache.write(cache.entry_path(cache_dir, spec.name, split, (prepared,)), dataset)
    return dataset


def _not_found_message(spec, split, data_dir, looked):
    lines = [f"Dataset {spec.name!r} (split {split!r}) is not available here. Looked at:"]
    lines += [f"  - {line}" for line in looked]
    if spec.kind == registry.USER:
        return "\n".join(lines)
    target = data_dir if data_dir is not None else f"${local.DATA_DIR_ENV}"
    fix = f"To fix: put {local.expected_files(spec, split)} in {target}/{spec.name}/"
    if data_dir is None:
        fix += f" (set {local.DATA_DIR_ENV} or pass data_dir=)"
    if spec.tfds_name is not None:
        fix += (
            f", or run once on a machine with internet access so that tensorflow-datasets "
            f"downloads {spec.tfds_name!r} into {tfds_source.tfds_data_dir()}"
        )
    return "\n".join(lines + [fix + "."])
