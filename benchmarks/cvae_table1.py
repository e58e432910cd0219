"""CVAE-outlier paper (002_50acf6af2ae3a4e5.txt) Table 1, "Ours" column, against our runs.

    python benchmarks/cvae_table1.py RUN_DIR [RUN_DIR ...]           # evaluate finished runs
    python benchmarks/cvae_table1.py --train mnist --output-dir runs  # train the preset first

Each run (a `cvae` run, or any classifier with a garbage class: a TIE run, a TIE run whose
pool was seeded with CVAE outliers) is scored by the probability of its extra class (`garbage`,
the paper's "OOD class probability") on the ID test set and on the paper's OOD sets we have:
Fashion-MNIST / MNIST (each other's OOD), Gaussian noise (N(0.5, 1) per pixel), uniform noise
(U[0, 1]) and the sphere (radius: the largest training-image norm), through
`keras_tie.evaluation.evaluate` (the same code as `keras-tie evaluate`), on all 10,000 test
images and 10,000 images of each synthetic set. EMNIST-letters, NotMNIST and Omniglot are not
in the local data. Writes benchmarks/results/cvae_table1_<ID>.md (or --output) with the paper's
numbers beside ours, and the Type I generation time the run measured.
"""

import argparse
import os
import subprocess
import sys

from keras_tie._io import read_json

# Table 1 of 002_50acf6af2ae3a4e5.txt, "Ours": FPR@95%TPR, detection error, AUROC, AUPR-out,
# AUPR-in, in %.
PAPER = {
    "mnist": {"accuracy": (99.0, 98.9),  # before / after training with the outliers
              "fashion_mnist": (0.0, 0.2, 100.0, 100.0, 100.0),
              "gaussian": (0.0, 0.0, 100.0, 100.0, 100.0),
              "uniform": (0.0, 0.0, 100.0, 100.0, 100.0),
              "sphere": (0.0, 0.1, 100.0, 100.0, 100.0)},
    "fashion_mnist": {"accuracy": (91.9, 91.2),
                      "mnist": (4.1, 4.2, 98.7, 98.2, 100.0),
                      "gaussian": (0.0, 0.2, 99.8, 99.9, 99.5),
                      "uniform": (0.2, 1.3, 99.8, 99.8, 99.8),
                      "sphere": (0.6, 0.8, 99.7, 99.4, 99.8)},
}
METRICS = ("fpr_at_95_tpr", "detection_error", "auroc", "aupr_out", "aupr_in")
HEADERS = ("FPR@95TPR", "Det. err", "AUROC", "AUPR-out", "AUPR-in")


def train_preset(dataset, output_dir):
    """Trains configs/cvae_DATASET.toml into OUTPUT_DIR/DATASET_cvae; returns the folder."""
    run_dir = os.path.join(output_dir, f"{dataset}_cvae")
    resume = ["--resume"] if os.path.isfile(os.path.join(run_dir, "run.json")) else []
    subprocess.run([sys.executable, "-m", "keras_tie.cli.main", "train", "--dataset", dataset,
                    "--method", "cvae", "--output", run_dir, "--quiet", *resume], check=True)
    return run_dir


def table(run_dirs, scores=("garbage",), data_dir=None, limit=None):
    """(ID dataset, Markdown lines) for `run_dirs` and `scores` against the paper."""
    from keras_tie.evaluation import evaluate

    infos = [read_json(os.path.join(run, "run.json")) for run in run_dirs]
    dataset = infos[0]["dataset"]
    paper = PAPER.get(dataset, {})
    ood_sets = [name for name in paper if name != "accuracy"] or ["gaussian", "uniform"]
    evaluation = evaluate(run_dirs, ood_sets, list(scores), limit=limit, data_dir=data_dir,
                          verbose=0, log=print)
    labels = {run["path"]: run["label"] for run in evaluation.runs}
    lines = [f"# CVAE-outlier paper, Table 1 (\"Ours\"), ID = {dataset}", "",
             "Scores: " + ", ".join(f"`{s}`" for s in scores) + " (`garbage`: the OOD-class "
             "probability, the paper's score; higher = more OOD), all test images "
             f"(limit: {limit or 'none'}). Metrics in %. Paper: 002_50acf6af2ae3a4e5.txt, "
             "Table 1. Produced by `python benchmarks/cvae_table1.py "
             + " ".join(run_dirs) + f" --scores {','.join(scores)}`.", "",
             "| run | method | score | OOD set | " + " | ".join(HEADERS) + " |",
             "|---|---|---|---|" + "---|" * len(HEADERS)]
    for ood in ood_sets:
        if ood in paper:
            lines.append(f"| paper | cvae (Ours) | OOD-class probability | {ood} | "
                         + " | ".join(f"{v:.1f}" for v in paper[ood]) + " |")
        for (run_dir, info), score in ((r, s) for r in zip(run_dirs, infos) for s in scores):
            label = labels.get(run_dir, os.path.basename(os.path.normpath(run_dir)))
            record = next((r for r in evaluation.level2 if r["run"] == label
                           and r["ood_set"] == ood and r["subset"] == "all"
                           and r["score"] == score), None)
            if record is None:
                continue
            lines.append(f"| {label} | {_method(info)} | `{score}` | {ood} | " + " | ".join(
                "n/a" if record[m] is None else f"{100 * record[m]:.1f}" for m in METRICS) + " |")
    lines += ["", "| run | method | ID test accuracy (%) | paper (before / after outliers) | "
              "Type I s / 1000 images | epochs (CVAE + classifier) |", "|---|---|---|---|---|---|"]
    accuracy = paper.get("accuracy")
    for run_dir, info in zip(run_dirs, infos):
        cvae = info.get("cvae") or {}
        seconds = cvae.get("type1_seconds_per_1000")
        epochs = f"{len(cvae.get('history') or [])} + {info.get('epochs_completed')}" \
            if cvae else str(info.get("epochs_completed"))
        lines.append(f"| {os.path.basename(os.path.normpath(run_dir))} | {_method(info)} | "
                     f"{100 * info['test_metrics']['accuracy']:.2f} | "
                     f"{'%.1f / %.1f' % accuracy if accuracy else 'n/a'} | "
                     f"{'n/a' if seconds is None else f'{seconds:.2f}'} | {epochs} |")
    return dataset, lines


def _method(info):
    tie = (info.get("config") or {}).get("tie") or {}
    if info.get("method") == "tie" and tie.get("cvae_run"):
        start = ("noise + cvae seed" if tie.get("cvae_initial") == "add" else "cvae seed")
        return f"tie, {start}, + {tie.get('cvae_per_epoch', 0)} cvae/epoch"
    return info.get("method", "?")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*")
    parser.add_argument("--train", default="", help="Train configs/cvae_DATASET.toml first.")
    parser.add_argument("--output-dir", default="runs", help="Where --train puts its run.")
    parser.add_argument("--scores", default="garbage",
                        help="Comma-separated scores, e.g. garbage,mahalanobis.")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    runs = list(args.runs)
    if args.train:
        runs.insert(0, train_preset(args.train, args.output_dir))
    if not runs:
        parser.error("Pass RUN_DIR(s) or --train DATASET.")
    scores = [s.strip() for s in args.scores.split(",") if s.strip()]
    dataset, lines = table(runs, scores, args.data_dir, args.limit)
    output = args.output or os.path.join(os.path.dirname(__file__), "results",
                                         f"cvae_table1_{dataset}.md")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"Wrote {output}")


if __name__ == "__main__":
    main()
