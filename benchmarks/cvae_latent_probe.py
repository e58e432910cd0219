"""Where a cvae run's CVAE and classifier put an OOD set: inside the Type II ellipsoids or not.

    python benchmarks/cvae_latent_probe.py RUN_DIR --ood mnist [--limit 2000] [--output FILE]

Type II outliers lie on each class's coverage ellipsoid (radius r_c, holding 95% of the
class's training codes); Type I outliers lie a step off the decoder's manifold at training
codes. If the CVAE encodes an OOD image *inside* a class's ellipsoid, neither kind of outlier
is near it, and the (n+1)-class classifier has no reason to call it OOD. This script measures
that, for the ID test set and each OOD set (the first `--limit` images, spread over classes for
labelled sets):

- the quantiles of min_c d_c(x) / r_c, where d_c is the Mahalanobis distance of the mean
  encoding mu(x, c) (the image encoded with label c) from class c's latent Gaussian;
- the share of images inside some class's ellipsoid (that ratio <= 1), and which class;
- the classifier's predicted class (the n classes and the OOD class) for the same images.

The latent statistics are refitted on the run's training set (as `OutlierSampler` does).
"""

import argparse

import numpy as np

from keras_tie._io import atomic_write_bytes

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def probe(run_dir, ood_names, limit=2000, data_dir=None):
    """{set name: dict of the measurements} for the ID test set and each OOD set."""
    from keras_tie.methods.cvae.on_manifold import mahalanobis_squared
    from keras_tie.methods.cvae.sampler import OutlierSampler
    from keras_tie.data import load
    from keras_tie.data.dataset import to_float
    from keras_tie.evaluation.runs import load_run
    from keras_tie.inference import predict_logits

    run = load_run(run_dir)
    info = run.info
    if run.method != "cvae":
        raise ValueError(f"{run_dir!r} is a {run.method!r} run; the probe needs the CVAE of a "
                         "`--method cvae` run.")
    data_dir = data_dir or info["config"].get("data_dir") or None
    dataset, shape = run.dataset, run.image_shape
    train = load(dataset, "train", data_dir=data_dir, limit=info["config"].get("limit") or None)
    sampler = OutlierSampler.from_run(run_dir, train.images, train.labels, dataset=dataset)
    stats, classes = sampler.stats, len(sampler.stats.radii)
    sets = {f"{dataset} (ID test)": load(dataset, "test", data_dir=data_dir, limit=limit).images}
    for name in ood_names:
        sets[name] = load(name, "test", data_dir=data_dir, limit=limit, target_shape=shape).images
    results = {}
    for name, images in sets.items():
        pixels = to_float(images)
        ratio = np.stack([np.sqrt(mahalanobis_squared(
            sampler.encode(pixels, np.full(len(pixels), c, np.int32)), stats.means[c],
            stats.covariances[c])) / stats.radii[c] for c in range(classes)], axis=1)
        nearest = ratio.argmin(axis=1)
        inside = ratio.min(axis=1) <= 1.0
        predicted = predict_logits(run.model, pixels).argmax(axis=-1)
        results[name] = {
            "count": len(pixels),
            "ratio_quantiles": np.quantile(ratio.min(axis=1), QUANTILES).tolist(),
            "inside": float(inside.mean()),
            "inside_by_class": np.bincount(nearest[inside], minlength=classes).tolist(),
            "predicted": np.bincount(predicted, minlength=classes + 1).tolist(),
        }
    return info, results


def to_markdown(info, results, command):
    names = list(info["class_names"]) + ["OOD class"]
    backbone = info["config"]["model"]["backbone"]
    lines = [f"# CVAE latent probe of {info['dataset']} run (`{backbone}` classifier)", "",
             f"Produced by `{command}`. Ratio: min over classes c of the Mahalanobis distance of "
             "the image's mean encoding under label c from class c's latent Gaussian, over r_c "
             "(the radius of the Type II ellipsoid).", "",
             "| set | images | ratio q05 / q25 / median / q75 / q95 | inside an ellipsoid | "
             "nearest class of those inside (top 3) | classifier's prediction (top 3) |",
             "|---|---|---|---|---|---|"]

    def top(counts, labels):
        order = np.argsort(counts)[::-1][:3]
        total = max(sum(counts), 1)
        return ", ".join(f"{labels[i]} {100 * counts[i] / total:.0f}%" for i in order if counts[i])

    for name, r in results.items():
        lines.append(f"| {name} | {r['count']} | "
                     + " / ".join(f"{q:.2f}" for q in r["ratio_quantiles"])
                     + f" | {100 * r['inside']:.1f}% | {top(r['inside_by_class'], names)} | "
                     f"{top(r['predicted'], names)} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--ood", default="mnist", help="comma-separated OOD sets (stored data)")
    parser.add_argument("--limit", type=int, default=2000, help="images per set")
    parser.add_argument("--data-dir")
    parser.add_argument("--output", help="markdown file to write")
    args = parser.parse_args(argv)
    info, results = probe(args.run_dir, [n for n in args.ood.split(",") if n], args.limit,
                          args.data_dir)
    command = "python benchmarks/cvae_latent_probe.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    text = to_markdown(info, results, command)
    print(text)
    if args.output:
        atomic_write_bytes(args.output, text.encode())
        print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
