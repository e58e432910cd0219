"""Writes an `Evaluation` to a folder: metrics.json, report.md and PNG figures.

Every file is written atomically (temporary file + rename), figures included.
"""

import datetime
import math
import os
import re

import numpy as np

import keras_tie
from keras_tie import metrics
from keras_tie._io import atomic_write_bytes, write_json
from keras_tie.detectors import HIGHER_IS_MORE_OOD
from keras_tie.evaluation import figures as plots
from keras_tie.inference import OOD_LABEL

METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
FORMAT = "keras-tie evaluation 1"

POSITIVE_CLASS_TEXT = (
    "In-distribution (ID) is the positive class for AUROC, AUPR-In, FPR@95%TPR, TNR@95%TPR "
    "and detection error (an image is accepted as ID when its score is <= the threshold); "
    "OOD is the positive class for AUPR-Out.")
VARIANT_TEXT = {
    "n": "over the n in-distribution outputs (garbage logit dropped, softmax renormalised: "
         "TIE level 2, section 6.3)",
    "n+1": "over all n+1 outputs, garbage class included (TIE level 1)",
    "features": "on the penultimate features",
}
_LEVEL2_TABLES = (  # (key, heading, percent?)
    ("auroc", "AUROC (higher is better)", False),
    ("aupr_in", "AUPR-In, ID positive (higher is better)", False),
    ("aupr_out", "AUPR-Out, OOD positive (higher is better)", False),
    ("fpr_at_95_tpr", "FPR@95%TPR in %, ID positive (lower is better)", True),
    ("tnr_at_95_tpr", "TNR@95%TPR in %, ID positive (higher is better)", True),
    ("detection_error", "Detection error in %: min over thresholds of "
                        "0.5(1-TPR) + 0.5 FPR (lower is better)", True),
)


def write_report(evaluation, report_dir, figures=True):
    """Writes metrics.json, report.md and (unless `figures=False`) the PNG figures.

    Returns:
        {"metrics": path, "report": path, "figures": [paths]}.
    """
    os.makedirs(report_dir, exist_ok=True)
    figure_files = _write_figures(evaluation, report_dir) if figures else []
    report = _markdown(evaluation, figure_files)
    atomic_write_bytes(os.path.join(report_dir, REPORT_FILE), report.encode("utf-8"))
    write_json(os.path.join(report_dir, METRICS_FILE), _metrics_json(evaluation, figure_files))
    return {"metrics": os.path.join(report_dir, METRICS_FILE),
            "report": os.path.join(report_dir, REPORT_FILE),
            "figures": [os.path.join(report_dir, f) for f, _ in figure_files]}


def slug(name):
    """A file-name-safe form of a run, score or set name (`msp@n+1` -> `msp_n+1`)."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(name)).strip("_") or "x"


# ---------------------------------------------------------------------- metrics.json

def _metrics_json(evaluation, figure_files):
    return _clean({
        "format": FORMAT,
        "keras_tie_version": keras_tie.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "convention": {
            "score": HIGHER_IS_MORE_OOD,
            "ood_label": OOD_LABEL,
            "positive_class": dict(metrics.POSITIVE_CLASS),
            "positive_class_text": POSITIVE_CLASS_TEXT,
            "variants": VARIANT_TEXT,
            "threshold": "the smallest score accepting >= 95% of the held-out ID images; "
                         "an image is OOD when its score exceeds it",
            "subsets": {"all": "every image of both sets",
                        "not_garbage": "only images whose argmax over all outputs is not the "
                                       "garbage class (TIE paper, section 6.3)"},
            "units": "fractions in [0, 1]",
        },
        "settings": evaluation.settings,
        "id_set": evaluation.id_set,
        "ood_sets": evaluation.ood_sets,
        "runs": evaluation.runs,
        "level1": evaluation.level1,
        "level2": evaluation.level2,
        "notes": evaluation.notes,
        "figures": [{"file": f, "what": what} for f, what in figure_files],
    })


def _clean(value):
    """NaN and infinities to None (JSON has no NaN); numpy values to plain ones."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------- figures

def _write_figures(evaluation, report_dir):
    """Draws and writes every figure; returns [(file name, description)]."""
    files = []

    def save(name, data, what):
        atomic_write_bytes(os.path.join(report_dir, name), data)
        files.append((name, what))

    ood_names = [s["name"] for s in evaluation.ood_sets]
    for run in evaluation.runs:
        label = run["label"]
        scores = evaluation.scores[label]
        for ood in ood_names:
            curves = {name: (by_set["id"], by_set[ood]) for name, by_set in scores.items()}
            save(f"roc_pr_{slug(label)}_{slug(ood)}.png",
                 plots.roc_pr_figure(curves, f"{label}: {evaluation.id_set['name']} (ID) "
                                               f"vs {ood} (OOD)"),
                 f"ROC and PR curves, run {label}, OOD set {ood}, one curve per score")
        for name, by_set in scores.items():
            save(f"hist_{slug(label)}_{slug(name)}.png",
                 plots.histogram_figure(by_set["id"], {o: by_set[o] for o in ood_names},
                                          evaluation.thresholds[label][name],
                                          f"{label}: score {name} - {evaluation.id_set['name']} "
                                          "test (ID) vs OOD sets"),
                 f"Histograms of ID vs OOD scores, run {label}, score {name}")

    id_name = evaluation.id_set["name"]
    labels = [run["label"] for run in evaluation.runs]
    level1 = {(r["run"], r["set"]): r for r in evaluation.level1}

    def cell(run, set_name, key):
        value = level1.get((run, set_name), {}).get(key)
        return math.nan if value is None else 100.0 * value

    sets = [id_name] + ood_names
    garbage_values = [[cell(r, id_name, "accuracy_all_outputs")]
                      + [cell(r, s, "sent_to_garbage") for s in ood_names] for r in labels]
    rejected_values = [[cell(r, s, "rejected_two_level") for s in sets] for r in labels]
    panels = [
        ("Level 1: ID accuracy / OOD sent to garbage (%)", labels,
         [f"{id_name}\n(ID accuracy)"] + [f"{s}\n(to garbage)" for s in ood_names],
         garbage_values, "{:.1f}", (0, 100), "viridis"),
        ("Two-level rule: rejected (%)", labels,
         [f"{id_name}\n(ID rejected)"] + [f"{s}\n(rejected)" for s in ood_names],
         rejected_values, "{:.1f}", (0, 100), "viridis"),
    ]
    save("level1_matrix.png",
         plots.matrix_figure(panels, f"Accuracy and rejection, runs x sets "
                                       f"({id_name} is in-distribution)"),
         "Heatmap of ID accuracy and the shares of each set sent to garbage / rejected, "
         "runs x sets")

    rows, fpr_values, auroc_values = [], [], []
    records = {(r["run"], r["score"], r["ood_set"]): r for r in evaluation.level2
               if r["subset"] == "all"}
    for name in evaluation.score_names:
        for label in labels:
            if name not in evaluation.scores[label]:
                continue
            rows.append(f"{name} | {label}")
            fpr_values.append([_percent_or_nan(records[(label, name, o)]["fpr_at_95_tpr"])
                               for o in ood_names])
            auroc_values.append([_value_or_nan(records[(label, name, o)]["auroc"])
                                 for o in ood_names])
    panels = [("FPR@95%TPR (%), lower is better", rows, ood_names, fpr_values, "{:.1f}",
               (0, 100), "viridis_r"),
              ("AUROC, higher is better", rows, ood_names, auroc_values, "{:.3f}", (0.0, 1.0),
               "viridis")]
    save("benchmark_matrix.png",
         plots.matrix_figure(panels, f"Benchmark: score | run x OOD set "
                                       f"({id_name} is in-distribution)"),
         "Heatmaps of FPR@95%TPR and AUROC, (score, run) x OOD sets")
    return files


def _value_or_nan(value):
    return math.nan if value is None else value


def _percent_or_nan(value):
    return math.nan if value is None else 100.0 * value


# ---------------------------------------------------------------------- report.md

def _fmt(value, percent=False):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _markdown(evaluation, figure_files):
    id_name = evaluation.id_set["name"]
    ood_names = [s["name"] for s in evaluation.ood_sets]
    settings = evaluation.settings
    out = [f"# OOD evaluation: {id_name} (in-distribution)", ""]
    out += [
        f"- **Sign convention:** {HIGHER_IS_MORE_OOD}, for every score. OOD label: {OOD_LABEL}.",
        f"- **Positive class:** {POSITIVE_CLASS_TEXT}",
        "- **Variants** (models with a garbage class): `name` is the score "
        f"{VARIANT_TEXT['n']}; `name@n+1` is the score {VARIANT_TEXT['n+1']}. "
        "`garbage` is the softmax probability of the garbage class; `mahalanobis` and "
        "`mahalanobis++` (the same on unit-norm features) work "
        f"{VARIANT_TEXT['features']}. A plain classifier has only `name` (its n outputs).",
        "- **Deployment threshold:** per score, the smallest score that accepts at least 95% "
        "of held-out ID images (the run's validation split, else a seeded random half of the "
        "ID test set; see Runs). Images scoring above it are declared OOD.",
        f"- **Sets:** {id_name} test, {evaluation.id_set['count']} images; "
        + ", ".join(f"{s['name']} {s['count']}" for s in evaluation.ood_sets)
        + f". Limit: {settings['limit'] or 'none'}. Seed: {settings['seed']} (synthetic sets, "
        "ID test half, balancing).",
        "- **Balanced:** " + ("yes: for the level-2 metrics the larger of ID and OOD is "
                              "subsampled to the smaller's size, without replacement, seeded by "
                              f"({settings['seed']}, the set's name)." if settings["balance"]
                              else "no: all images of both sides are used."),
        "",
        "## Runs", "",
        _table(["run", "method", "outputs", "tau_T", "threshold set (held-out ID)",
                "ID rates measured on", "Mahalanobis fit", "path"],
               [[r["label"], r["method"], "n/a" if r["num_outputs"] is None else r["num_outputs"],
                 "n/a" if r["tau"] is None else f"{r['tau']:.4f}",
                 _heldout_text(r["heldout"]), r["heldout"]["id_rates_on"],
                 f"{r['fit']['images']} train images" if r["fit"] else "-",
                 f"`{r['path']}`"] for r in evaluation.runs]),
        "",
    ]
    if settings["params"]:
        out += ["Score parameters given: " + ", ".join(
            f"`{s}.{k}={v}`" for s, p in settings["params"].items() for k, v in p.items()), ""]

    out += ["## Level 1: garbage class and two-level rule (TIE paper, Table 1)", "",
            "Shares in %. *to garbage*: argmax over all outputs is the garbage class. "
            "*rejected*: the two-level rule (garbage class, or UE over all outputs above the "
            "run's tau_T) rejects the image. On ID images both are errors; on OOD images "
            "they are detections. n/a: the run has no garbage class (or no tau_T).", ""]
    level1 = {(r["run"], r["set"]): r for r in evaluation.level1}
    header = ["run", "ID acc. (argmax n+1)", "ID acc. (argmax n)", "ID acc. of accepted",
              "ID to garbage", "ID rejected"]
    for name in ood_names:
        header += [f"{name} to garbage", f"{name} rejected"]
    rows = []
    for run in evaluation.runs:
        own = level1[(run["label"], id_name)]
        row = [run["label"], _fmt(own.get("accuracy_all_outputs"), True),
               _fmt(own.get("accuracy_id_outputs"), True),
               _fmt(own.get("accuracy_accepted"), True),
               _fmt(own.get("sent_to_garbage"), True), _fmt(own.get("rejected_two_level"), True)]
        for name in ood_names:
            record = level1[(run["label"], name)]
            row += [_fmt(record.get("sent_to_garbage"), True),
                    _fmt(record.get("rejected_two_level"), True)]
        rows.append(row)
    out += [_table(header, rows), ""]

    out += ["## Level 2: threshold-based detection (TIE paper, Table 2)", "",
            "All images of each set (subset `all`). Rows: score, then run, so the runs of one "
            "score sit side by side. *mean*: mean over the OOD sets.", ""]
    records = {(r["run"], r["score"], r["ood_set"], r["subset"]): r for r in evaluation.level2}
    labels = [run["label"] for run in evaluation.runs]
    pairs = [(name, label) for name in evaluation.score_names for label in labels
             if name in evaluation.scores[label]]
    for key, heading, percent in _LEVEL2_TABLES:
        rows = []
        for name, label in pairs:
            values = [records[(label, name, o, "all")][key] for o in ood_names]
            known = [v for v in values if v is not None]
            rows.append([f"`{name}`", label] + [_fmt(v, percent) for v in values]
                        + [_fmt(float(np.mean(known)) if known else None, percent)])
        out += [f"### {heading}", "", _table(["score", "run"] + ood_names + ["mean"], rows), ""]

    counts = [f"{o}: {records[(labels[0], pairs[0][0], o, 'all')]['id_count']} ID / "
              f"{records[(labels[0], pairs[0][0], o, 'all')]['ood_count']} OOD"
              for o in ood_names] if pairs else []
    out += ["Images per metric: " + "; ".join(counts) + ".", ""]

    out += ["### Deployment threshold: 95% TPR on held-out ID", "",
            "Threshold fitted on the held-out ID images (see Runs); *ID accepted*: share of "
            "ID test images it accepts (target 95%); per OOD set: share rejected, in %.", ""]
    rows = []
    for name, label in pairs:
        first = records[(label, name, ood_names[0], "all")]["threshold"]
        rows.append([f"`{name}`", label, f"{first['value']:.6g}",
                     _fmt(first["id_accepted"], True)]
                    + [_fmt(records[(label, name, o, "all")]["threshold"]["ood_rejected"], True)
                       for o in ood_names])
    out += [_table(["score", "run", "threshold", "ID accepted"]
                   + [f"{o} rejected" for o in ood_names], rows), ""]

    garbage_pairs = [(n, l) for n, l in pairs if (l, n, ood_names[0], "not_garbage") in records]
    if garbage_pairs:
        out += ["### Paper protocol (section 6.3): images not sent to the garbage class", "",
                "FPR@95%TPR in % (ID positive) on the ID and OOD images whose argmax over all "
                "outputs is not the garbage class; the OOD count follows each value.", ""]
        rows = []
        for name, label in garbage_pairs:
            row = [f"`{name}`", label]
            for o in ood_names:
                r = records[(label, name, o, "not_garbage")]
                row.append(f"{_fmt(r['fpr_at_95_tpr'], True)} ({r['ood_count']})")
            rows.append(row)
        out += [_table(["score", "run"] + ood_names, rows), ""]

    if figure_files:
        out += ["## Figures", ""]
        for name, what in figure_files:
            out += [f"### {what}", "", f"![{what}]({name})", ""]
    if evaluation.notes:
        out += ["## Notes", ""] + [f"- {note}" for note in evaluation.notes] + [""]
    return "\n".join(out)


def _heldout_text(heldout):
    if heldout["source"] == "validation":
        return (f"validation split ({heldout['count']} images, fraction {heldout['fraction']}, "
                f"seed {heldout['seed']})")
    return f"random half of ID test ({heldout['count']} images, seed {heldout['seed']})"
