"""Accuracy against rejection when a trained TIE model's garbage logit is moved after training.

    python benchmarks/garbage_shift_sweep.py RUN_DIR [--ood fashion_mnist,cifar10]
                                           [--deltas 0,0.5,1,...] [--output PATH.md]

A weighted cross-entropy with garbage-class weight w moves the optimum of the garbage logit
by about log(w), so adding delta to the garbage logit of a trained model previews a run with
a garbage weight e^delta times larger (or smaller, delta < 0) without training it. This
is an approximation: the weight also changes what the rest of the network learns. For each
delta the table gives the ID test accuracy over all n+1 outputs, the share of the ID test
set sent to garbage, and the share of each OOD test set (converted to the model's input
shape) sent to garbage. The logits are computed once; each delta is a vectorised argmax.

Writes a Markdown table to --output (default benchmarks/results/garbage_shift_RUN.md).
"""

import argparse
import os

import numpy as np

from keras_tie import run_folder
from keras_tie._io import read_json
from keras_tie.data import load
from keras_tie.inference import predict_logits

DEFAULT_DELTAS = "-2,-1,0,0.5,1,1.5,2,2.5,3,3.5,4"


def garbage_shares(logits, deltas):
    """[len(deltas), N] bool: argmax is the garbage class (last) after adding each delta to it."""
    logits = np.asarray(logits, np.float64)
    best_id = logits[:, :-1].max(axis=1)
    garbage = logits[:, -1]
    return garbage[None, :] + np.asarray(deltas, np.float64)[:, None] > best_id[None, :]


def sweep(run_dir, ood_names, deltas, data_dir=None):
    """Rows of the table: one dict per delta."""
    info = read_json(os.path.join(run_dir, "run.json"))
    if info.get("method") not in ("tie", "static", "cvae"):
        raise SystemExit(f"{run_dir} is a {info.get('method')!r} run; the sweep needs a model "
                         "with a garbage class (methods tie, static, cvae).")
    model = run_folder.load_model(run_folder.run_path(run_dir, run_folder.MODEL_FILE))
    shape = tuple(info["image_shape"])
    test = load(info["dataset"], split="test", data_dir=data_dir)
    id_logits = np.asarray(predict_logits(model, test.images))
    id_garbage = garbage_shares(id_logits, deltas)
    # Correct: not sent to garbage, and the best ID logit is the label's.
    id_correct = (~id_garbage) & (id_logits[:, :-1].argmax(axis=1) == test.labels)[None, :]
    ood = {name: garbage_shares(predict_logits(
        model, load(name, split="test", data_dir=data_dir, target_shape=shape).images), deltas)
        for name in ood_names}
    return info, [{"delta": float(d), "weight_factor": float(np.exp(d)),
                   "accuracy": 100 * float(id_correct[i].mean()),
                   "id_to_garbage": 100 * float(id_garbage[i].mean()),
                   **{name: 100 * float(sent[i].mean()) for name, sent in ood.items()}}
                  for i, d in enumerate(deltas)]


def markdown(run_dir, info, rows, ood_names):
    lines = [f"# Garbage-logit sweep: {os.path.basename(os.path.normpath(run_dir))}", "",
             f"Run: `{run_dir}` ({info.get('method')}, {info.get('dataset')}, garbage weight "
             f"{info.get('config', {}).get('tie', {}).get('garbage_weight')}). Delta added to "
             "the garbage logit after training; e^delta approximates the factor on the garbage "
             "weight. Produced by `python benchmarks/garbage_shift_sweep.py`.", "",
             "| delta | garbage weight x | ID accuracy (n+1 outputs) | ID test to garbage | "
             + " | ".join(f"{name} to garbage" for name in ood_names) + " |",
             "|---|---|---|---|" + "---|" * len(ood_names)]
    for r in rows:
        lines.append(f"| {r['delta']:+g} | {r['weight_factor']:.2f} | {r['accuracy']:.2f} | "
                     f"{r['id_to_garbage']:.2f} | "
                     + " | ".join(f"{r[name]:.1f}" for name in ood_names) + " |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run")
    parser.add_argument("--ood", default="fashion_mnist,cifar10,cifar100")
    parser.add_argument("--deltas", default=DEFAULT_DELTAS)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    try:
        deltas = [float(d) for d in args.deltas.split(",")]
    except ValueError:
        raise SystemExit(f"--deltas takes comma-separated numbers, e.g. {DEFAULT_DELTAS}. "
                         f"Received: {args.deltas!r}") from None
    ood_names = [name for name in args.ood.split(",") if name]
    info, rows = sweep(args.run, ood_names, deltas, args.data_dir)
    text = markdown(args.run, info, rows, ood_names)
    output = args.output or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results",
        f"garbage_shift_{os.path.basename(os.path.normpath(args.run))}.md")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        f.write(text)
    print(text)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
