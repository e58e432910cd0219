"""tensorflow-datasets as the second source, made to fail fast when offline.

Offline, tfds retries a download for minutes before it gives up. This module
first checks whether tfds has the dataset prepared in its data dir (which
works offline, by file names only), and otherwise probes the download host
once per process with a short socket timeout; offline, it says so in seconds.
tensorflow_datasets is imported only to actually load.
"""

import glob
import importlib.util
import os
import socket
import threading

import numpy as np

from keras_tie.data import decode, registry
from keras_tie.data.dataset import make_dataset
from keras_tie.data.errors import DatasetNotFoundError

TFDS_DATA_DIR_ENV = "TFDS_DATA_DIR"
DEFAULT_TFDS_DATA_DIR = os.path.join("~", "tensorflow_datasets")
# Set to 1 to skip the network probe and treat the machine as offline.
OFFLINE_ENV = "KERAS_TIE_OFFLINE"

# tfds downloads from Google Cloud Storage (its mirror of every dataset) first;
# a TCP connection to it tells online from offline. Tests replace these.
PROBE_ADDRESS = ("storage.googleapis.com", 443)
PROBE_TIMEOUT_S = 2.0

# tfds split names for ours; DTD's validation set joins train as in image_layouts.
_TFDS_SPLITS = {"dtd": {"train": "train+validation", "test": "test"}}
# omniglot's label feature is the character; keras-tie classes are alphabets.
_LABEL_FEATURES = {"omniglot": "alphabet"}

_network = None  # (online: bool, reason: str), probed once per process


def tfds_data_dir():
    """$TFDS_DATA_DIR, else ~/tensorflow_datasets, as tfds itself chooses."""
    chosen = os.environ.get(TFDS_DATA_DIR_ENV) or DEFAULT_TFDS_DATA_DIR
    return os.path.abspath(os.path.expanduser(chosen))


def installed():
    """Whether tensorflow_datasets can be imported (without importing it)."""
    return importlib.util.find_spec("tensorflow_datasets") is not None


def prepared_dir(tfds_name):
    """The newest prepared version folder of `tfds_name` (e.g. `emnist/letters`), or `None`."""
    pattern = os.path.join(tfds_data_dir(), *tfds_name.split("/"), "*", "dataset_info.json")
    found = sorted(glob.glob(pattern), key=_version_key)
    return os.path.dirname(found[-1]) if found else None


def _version_key(info_path):
    version = os.path.basename(os.path.dirname(info_path))
    return tuple(int(p) if p.isdigit() else -1 for p in version.split("."))


def network_status(refresh=False):
    """`(online, reason)`: one TCP connection to `PROBE_ADDRESS`, at most ~`PROBE_TIMEOUT_S` s.

    The answer is kept for the rest of the process. The probe runs in a daemon
    thread so a slow DNS lookup cannot stretch the wait beyond the timeout.
    """
    global _network
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        return False, f"{OFFLINE_ENV} is set"
    if _network is not None and not refresh:
        return _network
    host, port = PROBE_ADDRESS
    outcome = {}

    def probe():
        try:
            with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
                outcome["online"] = True
        except OSError as error:
            outcome["error"] = error

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S + 0.5)
    if outcome.get("online"):
        _network = (True, f"{host}:{port} reachable")
    else:
        detail = outcome.get("error") or f"no answer within {PROBE_TIMEOUT_S:g} s"
        _network = (False, f"offline: cannot connect to {host}:{port} ({detail})")
    return _network


def availability(spec):
    """`(available, where, reason)` of `spec` through tfds, without importing tfds."""
    if spec.tfds_name is None:
        return False, "", "not in tensorflow-datasets"
    if not installed():
        return False, "", "tensorflow-datasets is not installed"
    name = spec.tfds_name
    prepared = prepared_dir(name)
    if prepared is not None:
        return True, f"tensorflow-datasets ({prepared})", ""
    online, reason = network_status()
    if online:
        return True, f"tensorflow-datasets (download of {name!r} into {tfds_data_dir()})", ""
    where = tfds_data_dir()
    return False, "", f"tensorflow-datasets {name!r} is not prepared in {where} and {reason}"


def load(spec, split):
    """The `split` of `spec` through tfds (downloading when needed) as a `Dataset`."""
    import tensorflow_datasets as tfds

    tfds_split = _TFDS_SPLITS.get(spec.name, {}).get(split, split)
    label_feature = _LABEL_FEATURES.get(spec.name, "label")
    try:
        builder = tfds.builder(spec.tfds_name, data_dir=tfds_data_dir())
        builder.download_and_prepare()
        examples = builder.as_dataset(split=tfds_split)
        class_names = spec.class_names or tuple(builder.info.features[label_feature].names)
        images, labels = [], []
        for example in tfds.as_numpy(examples):
            images.append(_fit(example["image"], spec))
            labels.append(int(example[label_feature]) - spec.label_offset)
    except Exception as error:  # tfds raises many types; all mean "not available"
        raise DatasetNotFoundError(
            f"tensorflow-datasets could not provide {spec.tfds_name!r} split {tfds_split!r}: "
            f"{type(error).__name__}: {error}"
        ) from error
    where = registry.TFDS_SOURCE
    images = decode.stack_images(images, [f"{where}[{i}]" for i in range(len(images))], where)
    labels = np.asarray(labels, dtype=np.int64)
    return make_dataset(spec.name, split, images, labels, class_names, where, spec.image_shape)


def _fit(image, spec):
    """A tfds image brought to `spec`'s shape as the local readers produce it."""
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim == 2:
        image = image[:, :, None]
    if spec.transposed:
        image = np.ascontiguousarray(image.transpose(1, 0, 2))
    height, width, channels = spec.image_shape
    if channels == 1 and image.shape[-1] == 3:
        # omniglot: tfds stores gray strokes as RGB.
        image = np.round(image.mean(axis=-1, keepdims=True)).astype(np.uint8)
    if image.shape[:2] != (height, width):
        # dtd: images of many sizes, brought to DTD_IMAGE_SIZE like the local reader does.
        image = decode.crop_resize_array(image, height)
    return image
