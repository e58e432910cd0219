"""The TIE evaluation protocol: level 1 (garbage class, two-level rule) and level 2 (scores).

For one or more runs on the same in-distribution (ID) dataset, on the same
images and with the same scores:

- Level 1 (TIE paper, Table 1): ID test accuracy (argmax over all outputs,
  and for models with a garbage class also over the n ID outputs), and for
  the ID test set and each OOD set the share sent to the garbage class and
  the share rejected by the two-level rule with the run's tau_T.
- Level 2 (Table 2): AUROC, AUPR-In, AUPR-Out, FPR@95%TPR, TNR@95%TPR and
  detection error for each score and OOD set (`keras_tie.metrics`), on all
  images (subset `all`) and, for models with a garbage class, on the images
  whose argmax is not the garbage class (subset `not_garbage`: the paper's
  section 6.3 evaluates "the small subset of OOD samples misclassified into
  in-distribution classes").
- A deployment threshold per score: the score at 95% TPR on held-out ID
  images, from the run's validation split when run.json has one (fraction >
  0), else from a seeded random half of the ID test set, in which case the
  deployment rates on ID are measured on the other half.

Each (run, set) is passed through the classifier once; every score that
needs only features and logits is derived from that pass, and ODIN (and
Mahalanobis with input pre-processing) take their own gradient passes.

A flow run (method flow) has no classes: level 1 does not apply (its records
hold the image counts only), and its scores are the flow scores
(`approximate_mass`, `nll`); classifier scores requested for it are skipped
with a note, as flow scores are for classifiers.

A repair run (method repair, SR-OOD) likewise: no level 1, and its one score
is `repair`; every other score requested for it is skipped with a note, and
`repair` is skipped for the other runs.
"""

import ast
import dataclasses
import math
import os

import numpy as np

from keras_tie import metrics
from keras_tie.detectors import (
    ALL_OUTPUTS_SUFFIX,
    DEFAULT_BATCH_SIZE,
    FLOW_SCORES,
    HIGHER_IS_MORE_OOD,
    ClassifierDetector,
    base_name,
    classifier_outputs,
    detector_names,
    get_detector,
    variant_names,
)
from keras_tie.detectors.mahalanobis import Mahalanobis, fit_together
from keras_tie.evaluation.runs import EvaluationError, load_runs
from keras_tie.run_folder import validation_split_indices

DEFAULT_SCORES = ("ue", "garbage", "msp", "odin", "energy", "mahalanobis", "mahalanobis++",
                  "entropy")
FLOW_DEFAULT_SCORES = FLOW_SCORES  # ("approximate_mass", "nll")
REPAIR_DEFAULT_SCORES = ("repair",)
DEFAULT_OOD_SETS = ("mnist", "fashion_mnist", "cifar10", "cifar100", "gaussian", "uniform",
                    "sphere")
ID_SET = "id"
SUBSETS = ("all", "not_garbage")
# The seeded half of the ID test set that sets thresholds when a run has no validation split.
_HALF_SPLIT_KEY = 1


@dataclasses.dataclass
class Evaluation:
    """Everything an evaluation measured; `report.write_report` turns it into files.

    Attributes:
        settings: the options it ran with (sets, scores, limit, balance, seed...).
        id_set: {name, split, count, source} of the ID test set.
        ood_sets: one {name, count, source, kind, seed} per OOD set, in order.
        runs: one summary dict per run (label, path, method, tau, held-out
            source, detectors and their parameters, notes).
        level1: one record per (run, set) with accuracies and rejection shares.
        level2: one record per (run, score, OOD set, subset) with the metrics.
        scores: run label -> score name -> set name (`id`, `heldout` or an OOD
            set) -> numpy scores, higher = more OOD.
        thresholds: run label -> score name -> deployment threshold.
        notes: what was skipped, and why.
    """

    settings: dict
    id_set: dict
    ood_sets: list
    runs: list
    level1: list
    level2: list
    scores: dict
    thresholds: dict
    notes: list

    @property
    def score_names(self):
        """Every score evaluated, in first-seen order over the runs."""
        names = []
        for run in self.runs:
            names += [n for n in run["detectors"] if n not in names]
        return names


def parse_params(texts):
    """`["odin.epsilon=0.002", ...]` -> {"odin": {"epsilon": 0.002}}.

    The part before the last dot is a score name (`odin` applies to `odin` and
    `odin@n+1`; `odin@n+1` to that variant only); values are Python literals,
    else strings.
    """
    params = {}
    for text in texts or ():
        key, sep, raw = text.partition("=")
        score, dot, name = key.strip().rpartition(".")
        if not sep or not dot or not score or not name:
            raise EvaluationError(f"A score parameter is SCORE.KEY=VALUE, e.g. "
                                  f"odin.epsilon=0.002. Received: {text!r}")
        if score not in detector_names():
            raise EvaluationError(f"Unknown score in parameter {text!r}. Received: "
                                  f"score={score!r}. Available: {', '.join(detector_names())}")
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip()
        params.setdefault(score, {})[name] = value
    return params


def check_scores(scores):
    """Refuses unknown score names before anything is loaded (the message lists the valid ones)."""
    scores = [s.strip() for s in scores if s.strip()]
    if not scores:
        raise EvaluationError(f"No scores given. Available: {', '.join(detector_names())}")
    unknown = [s for s in scores if s not in detector_names()]
    if unknown:
        raise EvaluationError(f"Unknown score(s): {', '.join(unknown)}. Available: "
                              f"{', '.join(detector_names())}")
    return scores


def scores_for_run(scores, has_garbage, is_flow=False, is_repair=False):
    """(the score names a run gets, notes on those it cannot have).

    A base name gives all its variants the run has (`msp` -> `msp` and, with a
    garbage class, `msp@n+1`); a variant name gives that variant. `garbage`
    and the `@n+1` variants are skipped, with a note, for a plain classifier.
    A flow gets the flow scores only; a classifier every score but those.
    A repair run gets `repair` only, and only a repair run gets it.
    """
    names, notes = [], []
    for score in scores:
        if (score in REPAIR_DEFAULT_SCORES) != is_repair:
            notes.append(f"{score} skipped: " + (
                "the run is a repair run, scored by repair" if is_repair else
                "it scores a repair run (method repair)"))
            continue
        if (score in FLOW_SCORES) != is_flow:
            notes.append(f"{score} skipped: it scores " + (
                "a classifier and the run is a flow" if is_flow else
                "a flow and the run is a classifier"))
            continue
        candidates = [score] if score.endswith(ALL_OUTPUTS_SUFFIX) else variant_names(score)
        for name in candidates:
            needs_garbage = name == "garbage" or name.endswith(ALL_OUTPUTS_SUFFIX)
            if needs_garbage and not has_garbage:
                if name == score or name == "garbage":
                    notes.append(f"{name} skipped: the model has no garbage class")
                continue
            if name not in names:
                names.append(name)
    return names, notes


def evaluate(run_dirs, ood_sets=None, scores=None, *, params=None, limit=None,
             balance=False, seed=0, data_dir=None, batch_size=DEFAULT_BATCH_SIZE, verbose=1,
             log=None):
    """Evaluates run folders on the ID test set and OOD sets; see the module docstring.

    Args:
        run_dirs: run folders of `keras-tie train`, all on the same ID dataset.
        ood_sets: dataset names (`fashion_mnist`, `cifar10`, `gaussian`, ...);
            default `DEFAULT_OOD_SETS` without the ID dataset.
        scores: registry names (see `keras_tie.detectors.detector_names`);
            None: `DEFAULT_SCORES` for classifiers, `FLOW_DEFAULT_SCORES` for
            flows, `REPAIR_DEFAULT_SCORES` for repair runs.
        params: score name -> parameters, e.g. {"odin": {"epsilon": 0.002}}.
        limit: at most this many images per set: the ID test set, each OOD
            set (synthetic ones get `limit` images), the held-out ID set and
            the training images Mahalanobis is fitted on (stratified,
            deterministic subsets).
        balance: subsample the larger of ID and OOD to the smaller's size for
            the level-2 metrics (seeded by `seed` and the set's name).
        seed: seed of the synthetic sets, the balancing and the ID test half.
        data_dir: local data directory; default: the first run's recorded
            data_dir when that folder exists, else $KERAS_TIE_DATA_DIR.
        batch_size: images per forward pass.
        verbose: 1 shows progress bars.
        log: callable taking one line of progress text (e.g. print), or None.

    Returns:
        An `Evaluation`.

    Raises:
        EvaluationError: bad run folders, runs on different ID datasets, an
            unknown score or parameter, an OOD set equal to the ID set.
        keras_tie.data.DatasetError: an OOD set that is unknown or not available.
    """
    log = log or (lambda line: None)
    scores = None if scores is None else check_scores(scores)
    params = params or {}
    for name in params:
        if name not in detector_names():
            raise EvaluationError(f"Unknown score in params. Received: {name!r}. Available: "
                                  f"{', '.join(detector_names())}")
    if limit is not None and limit < 1:
        raise EvaluationError(f"limit must be a positive number of images. Received: {limit}")
    runs = load_runs(run_dirs)
    id_name = runs[0].dataset
    if ood_sets is None:
        ood_sets = [name for name in DEFAULT_OOD_SETS if name != id_name]
    ood_sets = list(dict.fromkeys(s.strip() for s in ood_sets if s.strip()))
    if not ood_sets:
        raise EvaluationError("No OOD sets given. Pass e.g. --ood fashion_mnist,gaussian.")
    if id_name in ood_sets:
        raise EvaluationError(f"{id_name!r} is the runs' in-distribution dataset; it cannot be "
                              f"an OOD set. Received: ood_sets={ood_sets}")
    from keras_tie.data import registry

    for name in ood_sets:
        registry.resolve(name)  # an unknown name fails now, listing the known ones

    # Detectors first: a bad score parameter fails before any data is read.
    run_detectors, notes = {}, []
    for run in runs:
        run_detectors[run.label], run_notes = _build_detectors(run, scores, params)
        notes += [f"{run.label}: {note}" for note in run_notes]
    if not any(run_detectors.values()):
        raise EvaluationError(f"None of the requested scores ({', '.join(scores or ())}) "
                              "applies to these runs: " + "; ".join(notes))

    data = _Data(runs, limit, seed, data_dir, log)
    ood_data = {name: data.ood_set(name) for name in ood_sets}
    notes += [f"{s['name']}: converted from {_shape_text(s['converted_from'])} to "
              f"{_shape_text(s['converted_to'])} to fit the model's input (the data layer's "
              "conversion: bilinear resizing, colour to ITU-R 601 luma or gray tiled to 3 "
              "channels)"
              for s in data.ood_summaries if "converted_from" in s]
    # scores None: each run's default scores (listed per run under "detectors").
    settings = {"ood_sets": ood_sets, "scores": scores, "params": params, "limit": limit,
                "balance": bool(balance), "seed": seed, "tpr": metrics.TPR_LEVEL,
                "batch_size": batch_size, "data_dir": data.data_dir}
    evaluation = Evaluation(settings, data.id_summary, data.ood_summaries, [], [], [], {}, {},
                            notes)
    for run in runs:
        _evaluate_run(evaluation, run, run_detectors[run.label], data, ood_data, balance, seed,
                      batch_size, verbose, log)
    return evaluation


def _build_detectors(run, scores, params):
    """{name: detector} for the scores the run can have, and notes on the others."""
    if scores is None and run.is_repair:
        scores = REPAIR_DEFAULT_SCORES
    if scores is None:
        scores = FLOW_DEFAULT_SCORES if run.is_flow else DEFAULT_SCORES
    names, notes = scores_for_run(scores, run.garbage_index is not None, run.is_flow,
                                  run.is_repair)
    detectors = {}
    for name in names:
        merged = {**params.get(base_name(name), {}), **params.get(name, {})}
        try:
            detectors[name] = get_detector(name, run.model, garbage_index=run.garbage_index,
                                           **merged)
        except ValueError as error:
            raise EvaluationError(f"Score {name!r} for run {run.label}: {error}") from error
    return detectors, notes


class _Data:
    """The sets every run is evaluated on, loaded once, and each run's training images."""

    def __init__(self, runs, limit, seed, data_dir, log):
        from keras_tie.data import load

        self._load = load
        self.runs, self.limit, self.seed, self.log = runs, limit, seed, log
        self.id_name = runs[0].dataset
        self.image_shape = runs[0].image_shape
        recorded = runs[0].config.get("data_dir") or None
        self.data_dir = data_dir or (recorded if recorded and os.path.isdir(recorded) else None)
        log(f"Loading {self.id_name} test" + (f" (limit {limit})" if limit else ""))
        self.id_test = load(self.id_name, "test", data_dir=self.data_dir, limit=limit)
        self.id_summary = {"name": self.id_name, "split": "test", "count": len(self.id_test),
                           "source": self.id_test.info.source,
                           "image_shape": list(self.image_shape)}
        # The seeded half of the ID test set that sets thresholds for runs
        # without a validation split; the other half measures the ID rates.
        order = np.random.default_rng([seed, _HALF_SPLIT_KEY]).permutation(len(self.id_test))
        half = len(self.id_test) // 2
        self.test_half = np.sort(order[:half]), np.sort(order[half:])
        self.ood_summaries = []
        self._train = {}

    def train_set(self, run):
        """The run's training set as it was loaded for training (its config's limit)."""
        key = int(run.config.get("limit") or 0)
        if key not in self._train:
            self.log(f"Loading {self.id_name} train" + (f" (limit {key})" if key else ""))
            self._train[key] = self._load(self.id_name, "train", data_dir=self.data_dir,
                                          limit=key or None)
        return self._train[key]

    def ood_set(self, name):
        from keras_tie.data import registry

        spec = registry.resolve(name)  # UnknownDatasetError lists the known names
        self.log(f"Loading OOD set {name}")
        if spec.kind == registry.SYNTHETIC:
            # sphere takes its radius from the largest training image norm.
            like = self.train_set(self.runs[0]) if spec.name == "sphere" else self.image_shape
            dataset = self._load(name, "test", like=like, count=self.limit, seed=self.seed)
            summary = {"name": name, "kind": "synthetic", "seed": self.seed}
        else:
            dataset = self._load(name, "test", data_dir=self.data_dir, limit=self.limit,
                                 target_shape=self.image_shape)
            summary = {"name": name, "kind": spec.kind, "converted_to": list(self.image_shape)}
            original = getattr(spec, "image_shape", None)
            if original and tuple(original) != tuple(self.image_shape):
                summary["converted_from"] = list(original)
        summary.update(count=len(dataset), source=dataset.info.source)
        self.ood_summaries.append(summary)
        return dataset

    def capped(self, index, labels):
        """`index` cut to `limit` examples spread evenly over the classes."""
        if self.limit is None or len(index) <= self.limit:
            return index
        from keras_tie.data.splits import stratified_subset

        return index[stratified_subset(labels[index], self.limit)]


def _shape_text(shape):
    return "x".join(str(d) for d in shape)


def _evaluate_run(evaluation, run, detectors, data, ood_data, balance, seed, batch_size,
                  verbose, log):
    """Fits, scores and measures one run; appends to `evaluation`."""
    fraction, validation_seed = run.validation
    fitted = [d for d in detectors.values() if getattr(d, "needs_fit", False)]
    train = train_index = validation_index = None
    if fraction > 0 or fitted:
        train = data.train_set(run)
        if fraction > 0:
            train_index, validation_index = validation_split_indices(len(train), fraction,
                                                                     validation_seed)
        else:
            train_index = np.arange(len(train))
    fit_summary = None
    if fitted:
        index = data.capped(train_index, train.labels)
        # Mahalanobis detectors on the same features (mahalanobis, mahalanobis++) share one
        # forward pass over the fit images.
        groups = {}
        for detector in fitted:
            key = (("mahalanobis", detector.layer_name) if isinstance(detector, Mahalanobis)
                   else id(detector))
            groups.setdefault(key, []).append(detector)
        for group in groups.values():
            log(f"[{run.label}] fitting {', '.join(d.name for d in group)} on "
                f"{len(index)} training images")
            images, labels = train.images[index], train.labels[index]
            if isinstance(group[0], Mahalanobis):
                fit_together(group, images, labels, batch_size=batch_size, verbose=verbose)
            else:
                group[0].fit(images, labels, batch_size=batch_size, verbose=verbose)
        fit_summary = {"images": int(len(index)), "split": "train",
                       "validation_excluded": fraction > 0}

    id_test = data.id_test
    log(f"[{run.label}] scoring {data.id_name} test ({len(id_test)} images)")
    logits, by_set = {}, {}
    logits[ID_SET], by_set[ID_SET] = _score_set(run, detectors, id_test.images, batch_size,
                                                verbose)
    if fraction > 0:
        index = data.capped(validation_index, train.labels)
        log(f"[{run.label}] scoring the validation split ({len(index)} images)")
        _, by_set["heldout"] = _score_set(run, detectors, train.images[index], batch_size,
                                          verbose)
        heldout = {"source": "validation", "count": int(len(index)), "fraction": fraction,
                   "seed": validation_seed,
                   "id_rates_on": f"{data.id_name} test, all {len(id_test)} images"}
        id_rate_index = np.arange(len(id_test))
    else:
        threshold_half, id_rate_index = data.test_half
        by_set["heldout"] = {name: s[threshold_half] for name, s in by_set[ID_SET].items()}
        heldout = {"source": "id_test_half", "count": int(len(threshold_half)), "seed": seed,
                   "id_rates_on": f"the other half of {data.id_name} test, "
                                  f"{len(id_rate_index)} images"}
    for name, dataset in ood_data.items():
        log(f"[{run.label}] scoring {name} ({len(dataset)} images)")
        logits[name], by_set[name] = _score_set(run, detectors, dataset.images, batch_size,
                                                verbose)

    scores = {d: {s: by_set[s][d] for s in by_set} for d in detectors}
    thresholds = {d: metrics.threshold_at_tpr(by_set["heldout"][d]) for d in detectors}
    evaluation.scores[run.label] = scores
    evaluation.thresholds[run.label] = thresholds
    evaluation.level1.extend(_level1(run, logits, id_test.labels, data.id_name))
    evaluation.runs.append({
        "label": run.label, "path": run.path, "method": run.method, "dataset": run.dataset,
        "num_classes": run.num_classes, "num_outputs": run.num_outputs,
        "garbage_index": run.garbage_index, "tau": run.tau, "heldout": heldout,
        "fit": fit_summary,
        "detectors": {name: _describe(d) for name, d in detectors.items()}})

    for score, detector in detectors.items():
        for name in ood_data:
            subsets = {"all": (slice(None), slice(None))}
            if run.garbage_index is not None:
                subsets["not_garbage"] = (logits[ID_SET].argmax(-1) != run.garbage_index,
                                          logits[name].argmax(-1) != run.garbage_index)
            for subset, (id_mask, ood_mask) in subsets.items():
                record = _level2_record(run.label, score, detector, name, subset,
                                        scores[score][ID_SET][id_mask],
                                        scores[score][name][ood_mask], balance, seed)
                if subset == "all":
                    rates = metrics.rates_at_threshold(scores[score][ID_SET][id_rate_index],
                                                       scores[score][name], thresholds[score])
                    record["threshold"] = {
                        "value": thresholds[score], "tpr_target": metrics.TPR_LEVEL,
                        "heldout": heldout["source"], "heldout_count": heldout["count"],
                        "id_accepted": rates["id_accepted"], "id_count": int(len(id_rate_index)),
                        "ood_rejected": rates["ood_rejected"],
                        "ood_count": int(len(scores[score][name]))}
                evaluation.level2.append(record)


def _score_set(run, detectors, images, batch_size, verbose):
    """(logits, {score: scores}): one forward pass shared by every score that needs no gradient.

    A flow (or a repair model) has no logits: they are returned as an `[N, 0]` array.
    """
    if run.is_flow or run.is_repair:
        return (np.zeros((len(images), 0), np.float32),
                {name: d.score(images, batch_size=batch_size, verbose=verbose)
                 for name, d in detectors.items()})
    shared = [d for d in detectors.values()
              if isinstance(d, ClassifierDetector) and d.from_outputs]
    needs_features = any(d.needs_features for d in shared)
    features, logits = classifier_outputs(run.model, images, needs_features, batch_size, verbose)
    scores = {}
    for name, detector in detectors.items():
        if detector in shared:
            scores[name] = np.asarray(detector.score_outputs(features, logits), np.float64)
        else:
            scores[name] = detector.score(images, batch_size=batch_size, verbose=verbose)
    return logits, scores


def _describe(detector):
    config = detector.get_config() if hasattr(detector, "get_config") else {}
    variant = config.get("outputs") or ("features" if getattr(detector, "needs_features", False)
                                        else None)
    return {"base_score": base_name(detector.name), "variant": variant,
            "class": type(detector).__name__, "params": config}


def _level1(run, logits, id_labels, id_name):
    """Accuracy and the shares sent to the garbage class / rejected, per set."""
    from keras_tie.inference import two_level_decision

    records = []
    garbage = run.garbage_index
    for name, set_logits in logits.items():
        is_id = name == ID_SET
        record = {"run": run.label, "set": id_name if is_id else name,
                  "role": "id" if is_id else "ood", "count": int(len(set_logits))}
        if run.is_flow or run.is_repair:  # no classes, no garbage class: no level 1
            records.append(record)
            continue
        predicted = set_logits.argmax(-1) if len(set_logits) else np.zeros(0, int)
        if is_id:
            record["accuracy_all_outputs"] = metrics.accuracy(predicted, id_labels)
            if garbage is not None:
                record["accuracy_id_outputs"] = metrics.accuracy(
                    set_logits[:, :garbage].argmax(-1), id_labels)
        if garbage is not None:
            record["sent_to_garbage"] = float(np.mean(predicted == garbage)) \
                if len(predicted) else math.nan
            if run.tau is not None:
                probabilities = _softmax(set_logits)
                decided, level = two_level_decision(probabilities, run.tau, garbage)
                record["rejected_two_level"] = float(np.mean(level > 0))
                record["rejected_level2"] = float(np.mean(level == 2))
                if is_id:
                    accepted = decided >= 0
                    record["accuracy_accepted"] = metrics.accuracy(decided[accepted],
                                                                   id_labels[accepted])
        records.append(record)
    return records


def _softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(shifted.astype(np.float64))
    return e / e.sum(axis=-1, keepdims=True)


def _level2_record(run_label, score, detector, ood_set, subset, id_scores, ood_scores, balance,
                   seed):
    description = _describe(detector)
    record = {"run": run_label, "score": score, "base_score": description["base_score"],
              "variant": description["variant"], "ood_set": ood_set, "subset": subset,
              "sign": HIGHER_IS_MORE_OOD, "positive_class": dict(metrics.POSITIVE_CLASS),
              "id_total": int(len(id_scores)), "ood_total": int(len(ood_scores)),
              "balanced": bool(balance), "balance_seed": seed if balance else None}
    if balance:
        id_index, ood_index = metrics.balanced_indices(len(id_scores), len(ood_scores), seed,
                                                       f"{ood_set}/{subset}")
        id_scores, ood_scores = id_scores[id_index], ood_scores[ood_index]
    if len(id_scores) == 0 or len(ood_scores) == 0:
        record.update({m: None for m in metrics.METRIC_NAMES},
                      id_count=int(len(id_scores)), ood_count=int(len(ood_scores)),
                      note="no images on one side")
        return record
    record.update(metrics.ood_metrics(id_scores, ood_scores))
    return record
