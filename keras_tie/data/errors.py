"""Errors raised by the data layer.

All of them subclass `DatasetError`, itself a `ValueError`, so callers (the CLI,
training scripts) can catch one class and show the message without a traceback.
"""


class DatasetError(ValueError):
    """Base class of every data-layer error: the message says what to fix."""


class UnknownDatasetError(DatasetError):
    """The dataset name is not one keras-tie knows."""


class DatasetNotFoundError(DatasetError):
    """The dataset is known but none of its sources is available here."""


class CorruptDataError(DatasetError):
    """A data file exists but cannot be read as what it claims to be."""
