"""TIE paper Table 1 on trained runs: ID accuracy and the share of each OOD set sent to the
garbage class (level 1), plus the share rejected by the full two-level rule.

    python benchmarks/tie_table1.py RUN_DIR [RUN_DIR ...] [--ood fashion_mnist,cifar10,...]
        [--ood-normalization id|own]

OOD test sets are converted to the model's input shape (e.g. CIFAR-10 to 28x28 grayscale).
Writes a Markdown table to benchmarks/results/table1_<ID>.md (or --output) and prints it.
The same rule is what `keras-tie evaluate` reports as level 1.

`--ood-normalization id` (default) feeds every OOD set's pixels as they are, so the model
standardises them with the training set's statistics, as a deployed model does.
`own` first restandardises each real OOD set to the training set's per-channel mean and
variance (`keras_tie.data.restandardize`): the model then sees the OOD set standardised by
its *own* statistics, as in PyTorch code that gives every dataset its own `Normalize`. The
paper does not say which it used; `own` uses the OOD set's statistics, which a deployed
detector never has. Synthetic noise sets are never restandardised.
"""

import argparse
import os

import numpy as np

from keras_tie import run_folder
from keras_tie._io import read_json
from keras_tie.data import load, restandardize
from keras_tie.inference import predict_probabilities, two_level_decision

# Paper Table 1 (001_b369f55403bc771c.txt), TIE / No TIE, for the rows we can run here.
PAPER = {
    "mnist": {"mnist": (99.1, 97.5), "fashion_mnist": (89.5, 23.4), "cifar10": (99.4, 36.2),
              "cifar100": (98.6, 28.9)},
    "fashion_mnist": {"fashion_mnist": (92.6, 91.3), "mnist": (85.2, 37.8),
                      "cifar10": (95.7, 35.7), "cifar100": (94.8, 30.8)},
    "cifar10": {"cifar10": (85.5, 84.7), "mnist": (97.8, 46.9), "fashion_mnist": (95.7, 36.8),
                "cifar100": (83.6, 39.2)},
}


def evaluate_run(run_dir, ood_names, data_dir=None, ood_normalization="id"):
    info = read_json(os.path.join(run_dir, "run.json"))
    model = run_folder.load_model(run_folder.run_path(run_dir, run_folder.MODEL_FILE))
    shape = tuple(info["image_shape"])
    tau = info.get("tau")
    test = load(info["dataset"], split="test", data_dir=data_dir)
    p = predict_probabilities(model, test.images)
    n = info["num_classes"]
    row = {"method": info["method"], "epochs": info.get("epochs_completed"),
           info["dataset"]: 100 * float(np.mean(p.argmax(-1) == test.labels)),
           "id_accuracy_n_outputs": 100 * float(np.mean(p[:, :n].argmax(-1) == test.labels))}
    if tau is not None:
        decided, _ = two_level_decision(p, tau)
        row["id_rejected_two_level"] = 100 * float(np.mean(decided == -1))
    # Synthetic sets as `keras-tie evaluate` draws them: seed 0, 10,000 images, the sphere's
    # radius from the largest training image norm (the training set, not the test set).
    reference = load(info["dataset"], split="train", data_dir=data_dir) \
        if "sphere" in ood_names else None
    if info.get("garbage_index") is None:  # plain: no garbage class, no two-level rule
        return info["dataset"], row
    for name in ood_names:
        synthetic = name in ("gaussian", "uniform", "sphere")
        kwargs = {"like": reference if name == "sphere" else test, "count": 10000, "seed": 0} \
            if synthetic else {}
        ood = load(name, split="test", data_dir=data_dir, target_shape=shape, **kwargs)
        images = ood.images
        if ood_normalization == "own" and not synthetic:
            stats = info["normalization"]
            images = restandardize(images, stats["mean"], stats["variance"])
        q = predict_probabilities(model, images)
        row[name] = 100 * float(np.mean(q.argmax(-1) == info["num_classes"]))
        if tau is not None:
            decided, _ = two_level_decision(q, tau)
            row[f"{name}_two_level"] = 100 * float(np.mean(decided == -1))
    return info["dataset"], row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--ood", default="")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", default=None)
    parser.add_argument("--ood-normalization", choices=("id", "own"), default="id",
                        help="id: OOD pixels as they are (deployment); own: each real OOD set "
                             "restandardised to the ID statistics first (per-dataset Normalize)")
    args = parser.parse_args()
    rows = []
    for run in args.runs:
        dataset = read_json(os.path.join(run, "run.json"))["dataset"]
        ood = [n for n in (args.ood.split(",") if args.ood else
                           [k for k in PAPER.get(dataset, {}) if k != dataset]) if n]
        dataset, row = evaluate_run(run, ood, args.data_dir, args.ood_normalization)
        rows.append((run, row, ood))
    lines = [f"# Table 1 reproduction, ID = {dataset}", "",
             "Level 1: share (%) of each OOD test set sent to the garbage class; ID column: "
             "test accuracy over all n+1 outputs. In brackets: share rejected by the two-level "
             "rule (garbage class or UE > tau_T). Paper: TIE / No TIE from Table 1. "
             f"OOD normalisation: {args.ood_normalization} (" + (
                 "pixels as they are, standardised with the ID statistics)" if
                 args.ood_normalization == "id" else "each real OOD set standardised by its "
                 "own mean and std; noise sets as drawn)"), "",
             "| run | method | epochs | " + " | ".join(
                 [dataset] + rows[0][2]) + " | ID accuracy over the n ID outputs | "
             "ID rejected by two-level rule |",
             "|---|---|---|" + "---|" * (len(rows[0][2]) + 3)]
    for run, row, ood in rows:
        cells = [f"{row[dataset]:.2f}"] + [
            f"{row[n]:.1f} ({row.get(n + '_two_level', float('nan')):.1f})" if n in row
            else "- (no garbage class)" for n in ood]
        rejected = f"{row['id_rejected_two_level']:.1f}" \
            if "id_rejected_two_level" in row else "-"
        lines.append(f"| {os.path.basename(run.rstrip('/'))} | {row['method']} | "
                     f"{row['epochs']} | " + " | ".join(cells) +
                     f" | {row['id_accuracy_n_outputs']:.2f} | {rejected} |")
    paper = PAPER.get(dataset, {})
    lines.append("| paper | TIE / No TIE | 20 | " + " | ".join(
        f"{paper[n][0]} / {paper[n][1]}" if n in paper else "-" for n in [dataset] + rows[0][2])
        + " | - | - |")
    text = "\n".join(lines) + "\n"
    print(text)
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                         f"table1_{dataset}.md")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
