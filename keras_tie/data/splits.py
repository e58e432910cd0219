"""Deterministic splits and subsets, for sources without their own train/test split.

Both functions depend only on the labels and a seed, never on global random
state, so the same files give the same split on every machine.
"""

import numpy as np

from keras_tie.data.errors import DatasetError

# Fraction of each class held out for testing when a source has no split of its
# own (digits, notMNIST, DTD without its label files, user folders without
# train/ and test/ sub-folders).
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def stratified_split(labels, test_fraction=TEST_FRACTION, seed=SPLIT_SEED):
    """Indices `(train, test)`, each sorted, holding `test_fraction` of every class in test.

    Each class is shuffled with `numpy.random.default_rng(seed)` (classes in
    ascending label order) and its first `round(n * test_fraction)` indices go to
    test; a class with at least two examples keeps at least one on each side.
    """
    if not 0.0 < test_fraction < 1.0:
        raise DatasetError(
            "test_fraction must be strictly between 0 and 1. "
            f"Received: test_fraction={test_fraction}"
        )
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        n_test = int(round(len(members) * test_fraction))
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    empty = np.zeros(0, dtype=np.int64)
    return (
        np.sort(np.concatenate(train or [empty])).astype(np.int64),
        np.sort(np.concatenate(test or [empty])).astype(np.int64),
    )


def stratified_subset(labels, limit):
    """Sorted indices of `limit` examples spread over the classes as evenly as possible.

    Deterministic and random-free: examples are ranked by their position within
    their class, then taken rank by rank (rank 0 of every class in label order,
    then rank 1, ...), so `limit=100` on a 10-class set takes the first 10 of
    each class in file order. Labels -1 (synthetic) count as one class.
    """
    labels = np.asarray(labels)
    if isinstance(limit, bool) or int(limit) != limit or limit < 0:
        raise DatasetError(
            f"limit must be a non-negative integer or None. Received: limit={limit!r}"
        )
    limit = int(limit)
    if limit >= len(labels):
        return np.arange(len(labels), dtype=np.int64)
    rank = np.zeros(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rank[members] = np.arange(len(members))
    order = np.lexsort((labels, rank))
    return np.sort(order[:limit]).astype(np.int64)
