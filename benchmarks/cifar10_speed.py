"""CIFAR-10 speed: what the preset's backbone and precision were chosen by, and TIE / plain.

    python benchmarks/cifar10_speed.py [--steps 10] [--limit 12800] [--skip-epochs | --skip-steps]

Measured one after the other in this process, so the ratios share one machine and one load:

1. Classifier train step (forward, backward, SGD update; batch 128 + 12 garbage images,
   11 outputs, 32x32x3 inputs) of each backbone (`airbench` width 64, the preset's; the
   paper's `conv5` width 32) in each precision (`float32`, `mixed_bfloat16`), with and
   without XLA (`tf.function(jit_compile=True)`): the median of `--steps` timed steps after
   two untimed ones (tracing). The preset takes the fastest that reaches its accuracy.
2. TIE epoch / plain epoch of the CIFAR-10 preset (`speed.tie_over_plain`): two epochs each
   on a proportional `--limit`-image slice (inverted samples, generator steps and the tau_t
   sample scaled with it), the ratio of the second epochs.

Prints a table and writes benchmarks/results/cifar10_speed.json and .md.
"""

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

VARIANTS = [(backbone, width, precision, jit)
            for backbone, width in (("airbench", 64), ("conv5", 32))
            for precision in ("float32", "mixed_bfloat16")
            for jit in (False, True)]


def step_seconds(backbone, width, precision, jit, steps, batch=140):
    """Median seconds of one compiled classifier train step (see the module docstring)."""
    import keras
    import tensorflow as tf

    from keras_tie.models import build_classifier

    classifier = build_classifier((32, 32, 3), 11, backbone, width=width, precision=precision)
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=5e-3)
    x = tf.random.stateless_uniform([batch, 32, 32, 3], seed=[0, 1])
    y = tf.random.stateless_uniform([batch], seed=[0, 2], maxval=11, dtype=tf.int32)

    @tf.function(jit_compile=jit)
    def step(x, y):
        with tf.GradientTape() as tape:
            logits = classifier(x, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, logits))
        variables = classifier.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    for _ in range(2):
        step(x, y).numpy()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step(x, y).numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times)), classifier.count_params()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--limit", type=int, default=12_800)
    parser.add_argument("--skip-epochs", action="store_true", help="Step timings only.")
    parser.add_argument("--skip-steps", action="store_true", help="TIE / plain epochs only.")
    parser.add_argument("--data-dir", default=os.environ.get("KERAS_TIE_DATA_DIR"))
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.skip_epochs and args.skip_steps:
        parser.error("--skip-epochs and --skip-steps together leave nothing to measure.")

    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # every variant traces its own step function: no warning
    rows = []
    for backbone, width, precision, jit in ([] if args.skip_steps else VARIANTS):
        seconds, params = step_seconds(backbone, width, precision, jit, args.steps)
        rows.append({"backbone": backbone, "width": width, "precision": precision,
                     "jit_compile": jit, "parameters": params, "step_seconds": seconds})
        print(f"{backbone:9s} w{width:<3d} {precision:15s} jit={jit!s:5s} "
              f"{1000 * seconds:7.1f} ms/step", flush=True)
    base = {r["backbone"]: r["step_seconds"] for r in rows
            if r["precision"] == "float32" and not r["jit_compile"]}
    for row in rows:
        row["speedup_over_float32_eager"] = base[row["backbone"]] / row["step_seconds"]
    report = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
                         f"{platform.python_version()}, TensorFlow {tf.__version__}",
              "command": "python benchmarks/cifar10_speed.py " + " ".join(sys.argv[1:]),
              "train_step": rows}
    if not args.skip_epochs:
        from speed import tie_over_plain

        report["tie_over_plain"] = tie_over_plain("cifar10", args.limit, args.data_dir)
        print(f"TIE / plain epoch: {report['tie_over_plain']['ratio']:.2f}")

    stem = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                       "cifar10_speed")
    os.makedirs(os.path.dirname(stem), exist_ok=True)
    with open(f"{stem}.json", "w") as f:
        json.dump(report, f, indent=2)
    with open(f"{stem}.md", "w") as f:
        f.write(markdown(report))
    print(markdown(report))
    print(f"wrote {stem}.json and {stem}.md")


def markdown(report):
    lines = ["# CIFAR-10 speed, measured in one process", "",
             f"Machine: {report['machine']}. Command: `{report['command']}`."]
    if report["train_step"]:
        lines += ["", "## Classifier train step (batch 128 + 12 garbage images, 32x32x3, "
                  "11 outputs)", "",
                  "| backbone | width | parameters | precision | XLA jit_compile | ms per step | "
                  "speed-up over float32 without XLA |",
                  "|---|---|---|---|---|---|---|"]
    for r in report["train_step"]:
        lines.append(f"| {r['backbone']} | {r['width']} | {r['parameters']:,} | {r['precision']} "
                     f"| {'yes' if r['jit_compile'] else 'no'} | {1000 * r['step_seconds']:.1f} "
                     f"| {r['speedup_over_float32_eager']:.2f} |")
    if "tie_over_plain" in report:
        t = report["tie_over_plain"]
        lines += ["", "## TIE epoch / plain epoch (configs/cifar10.toml)", "",
                  f"A proportional slice of {t['train_images']} training images "
                  f"({100 * t['share_of_full_epoch']:.1f}% of an epoch; scaled: "
                  + ", ".join(f"{k} {v}" for k, v in t["scaled"].items()) + "). "
                  "Second epoch of each (the first includes tracing).", "",
                  "| plain epoch s | TIE epoch s | TIE / plain |", "|---|---|---|",
                  f"| {t['epoch_seconds']['plain'][-1]:.1f} | {t['epoch_seconds']['tie'][-1]:.1f} "
                  f"| {t['ratio']:.2f} |"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
