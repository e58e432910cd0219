"""Speed of a TIE epoch relative to a plain Keras fit epoch (issue: TIE training, "Speed").

Trains, in one process on the same data, with the preset's settings:
  1. `plain`: the n-class classifier of the same backbone, plain `Model.fit`;
  2. `tie`: TIE with the preset's pool (first epochs);
  3. `tie-full-pool`: TIE whose pool starts at capacity, which is what the
     last epochs of a 20-epoch run look like (the pool is sampled, so its size
     should not matter; this run checks that).
Each for --epochs epochs (default 2); the first epoch includes tracing, so the
ratio is taken on the last epoch of each. Epoch time covers the training
steps plus, for TIE, the generator steps, the generation of the inverted
samples, the UE pass over the training set and the exclusion.

    python benchmarks/tie_epoch_speed.py --dataset mnist [--epochs 2] [--limit 0]

Prints a table and writes benchmarks/results/tie_epoch_speed_DATASET.json.
"""

import argparse
import json
import os
import platform
import tempfile
import time

from keras_tie.config import Config, preset_path
from keras_tie.training.runner import train


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    base = Config.load(preset_path(args.dataset),
                       {"dataset": args.dataset, "epochs": args.epochs, "limit": args.limit})
    variants = {
        "plain": base.replace(method="plain"),
        "tie": base,
        "tie-full-pool": Config.load(preset_path(args.dataset), {
            "dataset": args.dataset, "epochs": args.epochs, "limit": args.limit,
            "tie.initial_pool_size": base.tie.pool_capacity}),
    }
    results = epoch_seconds(variants)
    plain = results["plain"]["epoch_seconds"][-1]
    report = {
        "dataset": args.dataset,
        "epochs": args.epochs,
        "train_images": args.limit or "all",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}",
        "results": results,
        "ratios_last_epoch": {name: r["epoch_seconds"][-1] / plain
                              for name, r in results.items()},
    }
    print(f"{'variant':<15} {'last epoch s':>12} {'ratio to plain':>15}")
    for name, r in results.items():
        print(f"{name:<15} {r['epoch_seconds'][-1]:>12.1f} "
              f"{report['ratios_last_epoch'][name]:>15.2f}")
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                         f"tie_epoch_speed_{args.dataset}.json")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {output}")


def epoch_seconds(variants, verbose=2):
    """{name: {"epoch_seconds": [...], "total_seconds", "test_metrics"}} of training each
    config of `variants` ({name: Config}) in turn, in this process, into a scratch folder.

    `epoch_seconds` is the run's own per-epoch timer (training steps plus, for
    TIE, the inversion and exclusion); the first epoch includes tracing.
    """
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, config in variants.items():
            start = time.perf_counter()
            run = train(config, os.path.join(scratch, name), verbose=verbose)
            results[name] = {
                "epoch_seconds": [h["epoch_seconds"] for h in run.history],
                "total_seconds": time.perf_counter() - start,
                "test_metrics": run.test_metrics,
            }
    return results


if __name__ == "__main__":
    main()
