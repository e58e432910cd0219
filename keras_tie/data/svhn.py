"""Reader of the SVHN cropped-digits .mat files (train_32x32.mat, test_32x32.mat).

Each holds X uint8 [32, 32, 3, N] and y [N, 1] with labels 1..10, where 10
stands for the digit 0. http://ufldl.stanford.edu/housenumbers/
"""

import numpy as np

from keras_tie.data.dataset import make_dataset
from keras_tie.data.errors import CorruptDataError, DatasetNotFoundError


def read_svhn_mat(path, name, split, class_names):
    """The `Dataset` of one SVHN .mat file, labels mapped to 0..9 (10 -> 0)."""
    import scipy.io

    try:
        contents = scipy.io.loadmat(path)
        images, labels = contents["X"], contents["y"]
    except FileNotFoundError:
        raise DatasetNotFoundError(f"File not found: {path}") from None
    except KeyError as error:
        raise CorruptDataError(f"{path} lacks the variable {error} (expected X and y).") from error
    except (scipy.io.matlab.MatReadError, ValueError, TypeError, OSError) as error:
        raise CorruptDataError(f"{path} is not a readable .mat file ({error}).") from error
    if images.ndim != 4 or images.shape[:3] != (32, 32, 3):
        raise CorruptDataError(f"{path}: X must be [32, 32, 3, N]. Received: shape={images.shape}")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    labels = np.where(labels == 10, 0, labels)
    images = np.ascontiguousarray(np.transpose(images, (3, 0, 1, 2)), dtype=np.uint8)
    return make_dataset(name, split, images, labels, class_names, str(path), (32, 32, 3))
