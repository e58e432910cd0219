"""TIE paper Table 2 on trained runs: FPR@95%TPR of UE, ODIN, Energy and Mahalanobis.

    python benchmarks/tie_table2.py RUN_DIR [RUN_DIR ...] [--ood mnist,fashion_mnist,cifar10,cifar100]

Each run is evaluated with `keras_tie.evaluation.evaluate` (the code behind
`keras-tie evaluate`) on its full ID test set and the OOD test sets, converted
to the run's input shape. The scores are the level-2 ones of section 6.3: over
the n in-distribution outputs (garbage logit dropped) on a TIE run, over the n
outputs of a plain run. Two rows per run: every image ("all"), and only the
images the classifier did not send to the garbage class ("not garbage", the
paper's second level). The paper does not say which of the two its table
reports, so both are given. ODIN and Mahalanobis use the detectors' default
parameters (docs/evaluation.md).

Writes a Markdown table per ID dataset to benchmarks/results/table2_<ID>.md
(or --output-dir) with the paper's numbers beside ours, and prints it.
"""

import argparse
import os
import platform
import sys
import time

# Paper Table 2 (001_b369f55403bc771c.txt): FPR@95%TPR in %, (UE, ODIN, Energy, Mahalanobis),
# for the rows and columns that can be run here.
SCORES = ("ue", "odin", "energy", "mahalanobis")
PAPER = {
    "mnist": {"fashion_mnist": (7.47, 5.99, 2.86, 0.83), "cifar10": (11.37, 6.58, 1.99, 0.00),
              "cifar100": (14.30, 9.67, 3.43, 0.00)},
    "fashion_mnist": {"mnist": (66.77, 45.65, 51.21, 8.81), "cifar10": (19.71, 4.89, 1.44, 0.39),
                      "cifar100": (20.53, 5.05, 1.37, 0.52)},
    "cifar10": {"mnist": (77.95, 75.18, 77.60, 12.16),
                "fashion_mnist": (81.96, 70.57, 72.75, 53.14),
                "cifar100": (66.32, 66.19, 67.12, 94.45)},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--ood", default="", help="default: the paper's columns available here")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--limit", type=int, default=None,
                        help="images per set (default: full test sets); for smoke tests")
    parser.add_argument("--output-dir", default=None)
    args = parser.parse_args()

    from keras_tie._io import read_json
    from keras_tie.evaluation import evaluate

    by_dataset = {}
    for run in args.runs:
        by_dataset.setdefault(read_json(os.path.join(run, "run.json"))["dataset"], []).append(run)
    out_dir = args.output_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                              "results")
    os.makedirs(out_dir, exist_ok=True)
    for dataset, runs in by_dataset.items():
        ood = [s for s in args.ood.split(",") if s] or list(PAPER.get(dataset, {})) or None
        start = time.perf_counter()
        evaluation = evaluate(runs, ood_sets=ood, scores=list(SCORES), data_dir=args.data_dir,
                              limit=args.limit, verbose=0)
        seconds = time.perf_counter() - start
        text = table(dataset, evaluation, runs, seconds)
        print(text)
        path = os.path.join(out_dir, f"table2_{dataset}.md")
        with open(path, "w") as f:
            f.write(text)
        print(f"wrote {path}")


def table(dataset, evaluation, runs, seconds):
    """The Markdown table: one row per (run, subset), a UE / ODIN / Energy / Mahalanobis cell
    per OOD set, then the paper's row."""
    sets = evaluation.settings["ood_sets"]
    fpr = {}
    for record in evaluation.level2:
        if record["score"] in SCORES and record["fpr_at_95_tpr"] is not None:
            key = (record["run"], record["subset"], record["ood_set"], record["score"])
            fpr[key] = 100 * record["fpr_at_95_tpr"]
    lines = [f"# TIE paper Table 2, {dataset} as in-distribution: FPR@95%TPR (%)", "",
             "Each cell: UE / ODIN / Energy / Mahalanobis (lower is better). Level-2 scores "
             "over the n in-distribution outputs. `all`: every test image; `not garbage`: "
             "only images the classifier did not send to the garbage class.", "",
             "| run | subset | " + " | ".join(sets) + " |",
             "|---|---|" + "---|" * len(sets)]
    for run in evaluation.runs:
        for subset in ("all", "not_garbage"):
            cells = []
            for name in sets:
                values = [fpr.get((run["label"], subset, name, s)) for s in SCORES]
                cells.append(" / ".join("-" if v is None else f"{v:.2f}" for v in values))
            if all(c == " / ".join(["-"] * len(SCORES)) for c in cells):
                continue
            lines.append(f"| {run['label']} ({run['method']}) | {subset.replace('_', ' ')} | "
                         + " | ".join(cells) + " |")
    paper = PAPER.get(dataset, {})
    lines.append("| paper (TIE) | | " + " | ".join(
        " / ".join(f"{v:.2f}" for v in paper[name]) if name in paper else "n/a"
        for name in sets) + " |")
    lines += ["", f"ID test images: {evaluation.id_set['count']}; OOD sets: "
              + ", ".join(f"{s['name']} ({s['count']})" for s in evaluation.ood_sets) + ".",
              f"Runs: {', '.join(runs)}.",
              f"Evaluated in {seconds:.0f} s on {platform.machine()}, {os.cpu_count()} CPUs.",
              "Command: `python benchmarks/tie_table2.py " + " ".join(sys.argv[1:]) + "`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
