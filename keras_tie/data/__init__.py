"""Datasets for OOD detection: real ones by name, synthetic OOD sets, user folders.

```python
from keras_tie.data import load

train = load("mnist", split="train")       # uint8 [60000, 28, 28, 1], labels 0..9
ood = load("cifar10", split="test", target_shape=train.info.image_shape)
noise = load("gaussian", split="test", like=train, count=10000, seed=0)
pipeline = train.to_tf_dataset(batch_size=128, shuffle=True, seed=0)
```

Importing this package does not import TensorFlow; functions that need it
import it when called.
"""

from keras_tie.data.catalog import DatasetRecord, list_datasets
from keras_tie.data.convert import convert_images, restandardize
from keras_tie.data.dataset import Dataset, DatasetInfo
from keras_tie.data.errors import (
    CorruptDataError,
    DatasetError,
    DatasetNotFoundError,
    UnknownDatasetError,
)
from keras_tie.data.loader import load
from keras_tie.data.registry import dataset_names

__all__ = [
    "CorruptDataError",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetRecord",
    "UnknownDatasetError",
    "convert_images",
    "dataset_names",
    "list_datasets",
    "load",
    "restandardize",
]
