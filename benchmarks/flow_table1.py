"""Approximate-mass paper, Table 1 (Fashion-MNIST row): vanilla vs penalized RealNVP against MNIST.

Paper (004_f7d5548531a0fef9.txt, Table 1): AUROC of the approximate mass, Fashion-MNIST (ID)
vs MNIST (OOD): 0.977 for the vanilla (maximum-likelihood) flow, 0.994 for the penalized one
(alpha = 2 on the gradient of the batch-mean log-likelihood, 2 / 64 per image here), both
4 blocks / 2 scales (~10 M parameters), Adam, 200 epochs.

    python benchmarks/flow_table1.py [--epochs 200] [--limit 0] [--eval-limit 0]
                                     [--runs-dir runs/flow_table1] [--set flow.width=32 ...]
                                     [--variant NAME=ALPHA ...]

1. Speed: seconds per training step of the preset's flow with alpha = 0 and alpha > 0 on
   one real batch (`train_step` compiled as fit() compiles it, XLA on GPUs; after a warm-up
   step; median of --timing-steps),
   images/s, the penalty's cost ratio, and the extrapolated time of a full epoch.
2. Training: the preset configs/flow_fashion_mnist.toml with alpha = 0 ("vanilla") and
   alpha = 2 / 64 ("penalized"), or the --variant NAME=ALPHA pairs given, the same budget
   (--epochs, --limit, seed), through
   `keras_tie.training.runner.train` (so `keras-tie train --method flow` would give the
   same runs). A folder that already holds a complete run of the requested epochs is
   reused; an unfinished one is resumed.
3. Evaluation: AUROC, FPR@95%TPR and the other metrics of `keras_tie.metrics` for the
   `approximate_mass` and `nll` scores, Fashion-MNIST test (ID) vs MNIST test (OOD), 10,000
   images each (balanced, as the paper insists), or --eval-limit of each.

Writes benchmarks/results/flow_table1_fashion_mnist.md and .json (or --output PREFIX).
"""

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from keras_tie import metrics, run_folder
from keras_tie._io import read_json
from keras_tie.config import Config, parse_override, preset_path
from keras_tie.data import load
from keras_tie.detectors import get_detector
from keras_tie.methods.flow.model import DEFAULT_ALPHA, FlowModel
from keras_tie.methods.flow.realnvp import RealNVP
from keras_tie.training.runner import train

PAPER_AUROC = {"vanilla": 0.977, "penalized": 0.994}  # Table 1, FashionMNIST vs MNIST
# The default --variant pairs: the paper's alpha = 2 is on the gradient of the batch-mean
# log-likelihood, 2 / 64 per image at batch 64 (DEFAULT_ALPHA; docs/flow.md, "Units").
VARIANTS = {"vanilla": 0.0, "penalized": DEFAULT_ALPHA}
SCORES = ("approximate_mass", "nll")


def paper_auroc(alpha):
    """The paper's approximate-mass AUROC for the training mode of `alpha` (0: vanilla)."""
    return PAPER_AUROC["penalized" if alpha > 0 else "vanilla"]


def parse_variants(texts):
    """`NAME=ALPHA` strings to {name: alpha}, in order; the paper's pair when none is given."""
    variants = {}
    for text in texts:
        name, sep, value = text.partition("=")
        try:
            alpha = float(value)
        except ValueError:
            alpha = -1.0
        if not sep or not name or alpha < 0:
            raise SystemExit(f"--variant takes NAME=ALPHA with ALPHA >= 0, e.g. "
                             f"--variant penalized=0.03125. Received: {text!r}")
        variants[name] = alpha
    return variants or dict(VARIANTS)


def step_times(config, steps, data_dir, variants=None):
    """Seconds per compiled train step, per alpha, on one real batch of the preset's size.

    `variants`: {name: alpha}; default the paper's pair, `vanilla` and `penalized`."""
    images = load(config.dataset, "train", data_dir=data_dir,
                  limit=max(config.batch_size, 256)).images
    batch = tf.constant(images[:config.batch_size].astype(np.float32) / 255.0)
    f = config.flow
    results = {}
    for name, alpha in (variants or VARIANTS).items():
        keras.utils.set_random_seed(config.seed)
        flow = RealNVP(images.shape[1:], f.scales, f.blocks, f.width, f.logit_boundary)
        model = FlowModel(flow, alpha, config.seed)
        model.compile(keras.optimizers.Adam(f.learning_rate, clipnorm=f.clipnorm or None))
        model.optimizer.build(flow.trainable_variables)
        # As fit() runs it: XLA where Keras' jit_compile="auto" picks it (GPUs), else not.
        step = tf.function(model.train_step, jit_compile=bool(model.jit_compile))
        start = time.perf_counter()
        float(step(batch)["loss"])  # tracing + first step
        first = time.perf_counter() - start
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            float(step(batch)["loss"])
            times.append(time.perf_counter() - start)
        seconds = statistics.median(times)
        results[name] = {"alpha": alpha, "xla": bool(model.jit_compile),
                         "trace_and_first_step_seconds": first,
                         "step_seconds": times, "median_step_seconds": seconds,
                         "images_per_second": config.batch_size / seconds,
                         "parameters": int(flow.count_params())}
        print(f"{name}: {seconds:.2f} s/step ({config.batch_size / seconds:.1f} images/s), "
              f"trace + first step {first:.1f} s")
    return results


def train_variant(config, run_dir):
    """Trains (or reuses, or resumes) the run in `run_dir`; returns its run.json."""
    run_file = os.path.join(run_dir, "run.json")
    if os.path.isfile(run_file):
        info = read_json(run_file)
        if info.get("status") == "complete" and info.get("epochs_completed") == config.epochs:
            print(f"reusing {run_dir}")
            return info
        print(f"resuming {run_dir}")
        train(config, run_dir, resume=True, verbose=2)
    else:
        train(config, run_dir, verbose=2)
    return read_json(run_file)


def score_sets(run_dir, id_images, ood_images):
    """{score: (ID scores, OOD scores)} of the run's flow."""
    flow = run_folder.load_model(run_folder.run_path(run_dir, run_folder.MODEL_FILE))
    detectors = {name: get_detector(name, flow) for name in SCORES}
    return {name: (d.score(id_images), d.score(ood_images)) for name, d in detectors.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=None,
                        help="Epochs of both runs (default: the preset's, 200).")
    parser.add_argument("--limit", type=int, default=0, help="Training images (0 = all).")
    parser.add_argument("--eval-limit", type=int, default=0,
                        help="Test images per set (0 = all 10,000).")
    parser.add_argument("--ood", default="mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--runs-dir", default=os.path.join("runs", "flow_table1"))
    parser.add_argument("--timing-steps", type=int, default=3)
    parser.add_argument("--variant", dest="variants", action="append", default=[],
                        metavar="NAME=ALPHA",
                        help="A run to train and compare (repeatable; default: vanilla=0 "
                             "penalized=0.03125). Each is trained in RUNS_DIR/NAME.")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="Config override for both runs (repeatable).")
    parser.add_argument("--output", default=None,
                        help="Output path prefix (default: benchmarks/results/"
                             "flow_table1_fashion_mnist).")
    args = parser.parse_args()
    variants = parse_variants(args.variants)

    overrides = dict(parse_override(text) for text in args.overrides)
    overrides.update({"epochs": args.epochs, "limit": args.limit, "data_dir": args.data_dir})
    base = Config.load(preset_path("flow_fashion_mnist"), overrides)
    data_dir = base.data_dir or None

    print("== speed")
    speed = step_times(base, args.timing_steps, data_dir, variants)
    train_count = len(load(base.dataset, "train", data_dir=data_dir,
                           limit=base.limit or None))
    steps_per_epoch = train_count // base.batch_size
    full_epoch_steps = 60000 // base.batch_size
    for result in speed.values():
        result["extrapolated_epoch_seconds"] = result["median_step_seconds"] * steps_per_epoch
        result["extrapolated_full_epoch_hours"] = \
            result["median_step_seconds"] * full_epoch_steps / 3600
    plain = [s for s in speed.values() if s["alpha"] == 0]
    penalized = [s for s in speed.values() if s["alpha"] > 0]
    ratio = (penalized[0]["median_step_seconds"] / plain[0]["median_step_seconds"]
             if plain and penalized else None)

    print("== training")
    runs = {}
    for name, alpha in variants.items():
        config = base.replace(flow=dataclasses.replace(base.flow, alpha=alpha))
        runs[name] = train_variant(config, os.path.join(args.runs_dir, name))

    print("== evaluation")
    limit = args.eval_limit or None
    id_test = load(base.dataset, "test", data_dir=data_dir, limit=limit)
    ood_test = load(args.ood, "test", data_dir=data_dir, limit=limit,
                    target_shape=id_test.info.image_shape)
    size = min(len(id_test), len(ood_test))
    id_index, ood_index = metrics.balanced_indices(len(id_test), len(ood_test), base.seed,
                                                   args.ood)
    rows = []
    for name, alpha in variants.items():
        scored = score_sets(os.path.join(args.runs_dir, name), id_test.images[id_index],
                            ood_test.images[ood_index])
        history = runs[name].get("history", [])
        seconds = [h["epoch_seconds"] for h in history if "epoch_seconds" in h]
        # The last epoch's training steps (epoch_seconds excludes the trace's scoring).
        speed[name]["fit_images_per_second_last_epoch"] = \
            runs[name]["steps_per_epoch"] * base.batch_size / seconds[-1] if seconds else None
        for score, (id_scores, ood_scores) in scored.items():
            rows.append({
                "model": name, "alpha": alpha, "score": score,
                "epochs": runs[name].get("epochs_completed"),
                "train_images": runs[name].get("train_images"),
                **metrics.ood_metrics(id_scores, ood_scores),
                "id_mean": float(np.mean(id_scores)), "ood_mean": float(np.mean(ood_scores)),
                "paper_auroc": paper_auroc(alpha) if score == "approximate_mass" else None,
                "test_bits_per_dim": runs[name].get("test_metrics", {}).get("bits_per_dim"),
            })

    report = {
        "benchmark": "approximate-mass paper Table 1, Fashion-MNIST (ID) vs MNIST (OOD)",
        "config": base.to_dict(), "ood": args.ood, "runs_dir": args.runs_dir,
        "evaluation_images_per_side": size,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                   f"GPUs: {len(tf.config.list_physical_devices('GPU'))}, "
                   f"Python {platform.python_version()}, TF {tf.__version__}",
        "speed": speed, "penalty_cost_ratio": ratio,
        "steps_per_full_epoch": full_epoch_steps, "results": rows,
    }
    prefix = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                         "flow_table1_fashion_mnist")
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    with open(prefix + ".json", "w") as f:
        json.dump(report, f, indent=2)
    text = markdown(report)
    with open(prefix + ".md", "w") as f:
        f.write(text)
    print(text)
    print(f"wrote {prefix}.md and {prefix}.json")


def markdown(report):
    config = report["config"]
    flow = config["flow"]
    lines = [
        "# Approximate-mass paper, Table 1: Fashion-MNIST (ID) vs MNIST (OOD)", "",
        f"RealNVP, {flow['blocks']} blocks, {flow['scales']} scales, width {flow['width']} "
        f"({next(iter(report['speed'].values()))['parameters']:,} parameters); Adam "
        f"{flow['learning_rate']}, batch {config['batch_size']}, {config['epochs']} epochs, "
        f"{'all' if not config['limit'] else config['limit']} training images, seed "
        f"{config['seed']}. Scores at the bins' midpoints; "
        f"{report['evaluation_images_per_side']} test images per side (balanced). "
        "Higher score = more OOD; ID is the positive class for FPR@95%TPR.", "",
        "| model | alpha | score | epochs | AUROC | paper AUROC | FPR@95%TPR | AUPR-In | "
        "AUPR-Out | mean ID | mean OOD | test bits/dim |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        paper = f"{r['paper_auroc']:.3f}" if r["paper_auroc"] is not None else "-"
        bpd = f"{r['test_bits_per_dim']:.3f}" if r["test_bits_per_dim"] is not None else "-"
        lines.append(
            f"| {r['model']} | {r['alpha']:g} | `{r['score']}` | {r['epochs']} | "
            f"{r['auroc']:.3f} | {paper} | {100 * r['fpr_at_95_tpr']:.1f}% | "
            f"{r['aupr_in']:.3f} | {r['aupr_out']:.3f} | {r['id_mean']:.4g} | "
            f"{r['ood_mean']:.4g} | {bpd} |")
    speed = report["speed"]
    lines += [
        "", "## Training speed", "",
        f"Machine: {report['machine']}. Median of compiled train steps (XLA: "
        f"{'yes' if next(iter(speed.values()))['xla'] else 'no'}, as fit() decides) on one batch of "
        f"{config['batch_size']} Fashion-MNIST images after a warm-up step.", "",
        "| model | alpha | s/step | images/s | trace + first step (s) | full epoch "
        f"({report['steps_per_full_epoch']} steps), hours | images/s in fit (last epoch; "
        "epoch 1 includes tracing) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in speed.items():
        fit = s.get("fit_images_per_second_last_epoch")
        lines.append(f"| {name} | {s['alpha']:g} | {s['median_step_seconds']:.2f} | "
                     f"{s['images_per_second']:.1f} | {s['trace_and_first_step_seconds']:.1f} | "
                     f"{s['extrapolated_full_epoch_hours']:.2f} | "
                     f"{'-' if fit is None else f'{fit:.1f}'} |")
    if report["penalty_cost_ratio"] is not None:
        lines += ["", f"The penalty (double backpropagation) costs "
                      f"{report['penalty_cost_ratio']:.2f}x a maximum-likelihood step.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
