"""Export parity, sizes and latency (issue: export and deployment).

Exports RUN_DIR (SavedModel + TFLite float32, float16, int8, int8_full) into a scratch
folder and measures, on the run's test images and a mixed ID / OOD set (other
datasets converted to the run's shape as the data layer converts OOD sets,
plus uniform noise):

- parity: the in-memory Keras model + `keras_tie.inference.two_level_decision`
  against the SavedModel; each TFLite variant against the SavedModel
  (float32 probabilities within 1e-4; int8 labels equal on >= 99% of ID test
  images, reject decisions equal on >= 98% of the mixed set). "ID labels"
  compares the output `label` (class or -1), so a rejection that flips near
  the threshold counts; "ID classes" compares the argmax alone;
- sizes of the SavedModel and of each .tflite file;
- latency per image at batch 1 and batch 256: the bare Keras classifier
  called in a tf.function (pixels already in [0, 1], logits only), the
  SavedModel's serving_default signature (pixels in [0, 255], every output),
  and each TFLite variant in the LiteRT interpreter. The calls alternate,
  and the median of --repeats rounds is reported, so a background job slows
  all of them alike. The SavedModel / backbone ratio must stay below 1.1.

    python benchmarks/export_benchmark.py RUN_DIR [--id-images 2000] [--ood-images 2000]

Prints a table and writes benchmarks/results/export_DATASET.json.
"""

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np

from keras_tie import run_folder

OOD_CANDIDATES = ("fashion_mnist", "mnist", "cifar10", "svhn_cropped", "cifar100")
LATENCY_RATIO_LIMIT = 1.1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--id-images", type=int, default=2000)
    parser.add_argument("--ood-images", type=int, default=2000,
                        help="OOD images of the mixed set, shared among the OOD sets.")
    parser.add_argument("--repeats", type=int, default=200,
                        help="Timed rounds at batch 1 (batch 256: a tenth).")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()

    import tensorflow as tf

    from keras_tie.data import DatasetError, load
    from keras_tie.export import ExportedModel, export_run
    from keras_tie.export.parity import (
        FLOAT32_TOLERANCE,
        INT8_DECISION_AGREEMENT,
        INT8_LABEL_AGREEMENT,
        compare_outputs,
        run_in_batches,
    )
    from keras_tie.inference import predict_probabilities, two_level_decision
    from keras_tie.models import float32_copy

    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        result = export_run(args.run_dir, os.path.join(scratch, "model"),
                            tflite=["float32", "float16", "int8", "int8_full"],
                            data_dir=args.data_dir)
        export_seconds = time.perf_counter() - start
        meta = result.metadata
        dataset = meta["source_run"]["dataset"]
        shape = tuple(meta["input"]["shape"][1:])
        data_dir = args.data_dir or None

        test = load(dataset, split="test", data_dir=data_dir, limit=args.id_images)
        id_images = _pixels(test.images)
        ood_sets, ood_parts = [], []
        names = [n for n in OOD_CANDIDATES if n != dataset]
        for name in names:
            if len(ood_sets) == 2:
                break
            try:
                part = load(name, split="test", data_dir=data_dir, target_shape=shape,
                            limit=args.ood_images // 3)
            except DatasetError:
                continue
            ood_sets.append(name)
            ood_parts.append(_pixels(part.images))
        noise = load("uniform", split="test", like=shape,
                     count=args.ood_images - sum(len(p) for p in ood_parts), seed=0)
        ood_sets.append("uniform")
        ood_parts.append(_pixels(noise.images))
        mixed = np.concatenate([id_images, *ood_parts])

        saved = ExportedModel(result.path)
        reference_id = run_in_batches(saved, id_images)
        reference_mixed = run_in_batches(saved, mixed)

        # The export computes in float32 (float32_copy); a mixed_bfloat16 run is compared both
        # as exported (the parity and the backbone latency) and as trained (its labels).
        trained = run_folder.load_model(run_folder.run_path(args.run_dir, run_folder.MODEL_FILE))
        classifier = float32_copy(trained)
        p = predict_probabilities(classifier, mixed / 255.0)
        tau = meta["score"]["threshold"]
        keras_parity = {
            "max_abs_probabilities": float(np.abs(p - reference_mixed["probabilities"]).max())}
        if classifier is not trained:
            p_trained = predict_probabilities(trained, mixed / 255.0)
            keras_parity["trained_precision"] = _precision(trained)
            keras_parity["trained_max_abs_probabilities"] = float(
                np.abs(p_trained - reference_mixed["probabilities"]).max())
            keras_parity["trained_argmax_agreement"] = float(np.mean(
                p_trained.argmax(-1) == reference_mixed["probabilities"].argmax(-1)))
        if meta["score"]["name"] == "ue" and meta["garbage_index"] is not None:
            labels, _ = two_level_decision(p, tau, meta["garbage_index"])
            keras_parity["label_agreement_two_level_decision"] = float(
                np.mean(labels == reference_mixed["label"]))

        variants = {}
        for variant, info in meta["tflite"].items():
            lite = ExportedModel(os.path.join(result.path, info["file"]))
            on_id = compare_outputs(reference_id, run_in_batches(lite, id_images))
            on_mixed = compare_outputs(reference_mixed, run_in_batches(lite, mixed))
            variants[variant] = {"bytes": info["bytes"], "id": on_id, "mixed": on_mixed,
                                 "model": lite}
        checks = {
            "float32_within_1e-4": variants["float32"]["mixed"]["max_abs_probabilities"]
            <= FLOAT32_TOLERANCE,
            "int8_id_labels_>=99%": variants["int8"]["id"]["label_agreement"]
            >= INT8_LABEL_AGREEMENT,
            "int8_mixed_decisions_>=98%": variants["int8"]["mixed"]["decision_agreement"]
            >= INT8_DECISION_AGREEMENT,
        }

        latency = latency_per_image(classifier, saved,
                                    {v: e["model"] for v, e in variants.items()}, id_images,
                                    args.repeats)
        ratios = {batch: latency[batch]["savedmodel"] / latency[batch]["keras_backbone"]
                  for batch in latency}
        checks["savedmodel_vs_backbone_<1.1"] = all(r < LATENCY_RATIO_LIMIT
                                                    for r in ratios.values())
        saved_bytes = sum(os.path.getsize(os.path.join(d, f))
                          for d, _, files in os.walk(result.path) for f in files
                          if os.sep + "tflite" not in d and "assets.extra" not in d)

    report = {
        "run_dir": os.path.abspath(args.run_dir),
        "dataset": dataset,
        "method": meta["source_run"]["method"],
        "score": meta["score"],
        "id_images": len(id_images),
        "mixed_images": {"id": len(id_images), "ood_sets": ood_sets,
                         "ood": int(len(mixed) - len(id_images))},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.python_version()}, "
                   f"TensorFlow {tf.__version__}",
        "export_seconds_with_tflite": export_seconds,
        "sizes_bytes": {"savedmodel": saved_bytes,
                        **{f"tflite_{v}": e["bytes"] for v, e in variants.items()}},
        "keras_vs_savedmodel_on_mixed": keras_parity,
        "tflite_vs_savedmodel": {v: {"id": e["id"], "mixed": e["mixed"]}
                                 for v, e in variants.items()},
        "latency_ms_per_image": {str(b): v for b, v in latency.items()},
        "savedmodel_over_backbone": {str(b): r for b, r in ratios.items()},
        "rejected_fraction_savedmodel": {
            "id": float(np.mean(reference_id["is_ood"])),
            "ood": float(np.mean(reference_mixed["is_ood"][len(id_images):]))},
        "checks": checks,
    }
    _print_table(report)
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                         f"export_{dataset}.json")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        json.dump(report, f, indent=2)
    print(f"wrote {output}")


def latency_per_image(classifier, saved, tflite_models, images, repeats, batches=(1, 256)):
    """{batch: {model: median ms per image}} of the bare Keras classifier (a tf.function on
    pixels in [0, 1], logits only), the SavedModel's serving_default signature (pixels in
    [0, 255], every output) and each TFLite model ({variant: ExportedModel}), timed
    alternately (`_time_alternating`) on the first `batch` of `images` (float32 in [0, 255]);
    --repeats rounds at batch 1, a tenth (at least 10) at larger batches."""
    import tensorflow as tf

    backbone = tf.function(lambda x: classifier(x, training=False))
    latency = {}
    for batch in batches:
        pixels = images[:batch]
        scaled = tf.constant(pixels / 255.0)
        raw = tf.constant(pixels)
        signature = saved._runner
        calls = {
            "keras_backbone": lambda: backbone(scaled).numpy(),
            "savedmodel": lambda: {k: v.numpy() for k, v in signature(images=raw).items()},
        }
        for variant, model in tflite_models.items():
            calls[f"tflite_{variant}"] = (lambda m: lambda: m.predict(pixels))(model)
        latency[batch] = _time_alternating(calls, max(repeats // (10 if batch > 1 else 1), 10),
                                           batch)
    return latency


def _precision(model):
    """The compute dtype policies of `model`'s layers, e.g. "mixed_bfloat16 + float32"."""
    return " + ".join(sorted({layer.dtype_policy.name for layer in model.layers}))


def _pixels(images):
    """The data layer's images (uint8, or float in [0, 1] once converted) as float32 in [0, 255]."""
    return images.astype(np.float32) if images.dtype == np.uint8 \
        else images.astype(np.float32) * 255.0


def _time_alternating(calls, repeats, batch):
    """Median milliseconds per image of each call.

    The calls take turns in every round, and the turn order rotates from round
    to round, so neither a background job nor a cache warmed by the previous
    call favours one of them.
    """
    for call in calls.values():
        call()
        call()
    names = list(calls)
    times = {name: [] for name in names}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) * 1e3 / batch for name, t in times.items()}


def _print_table(report):
    print(f"export of {report['run_dir']} ({report['method']}, {report['dataset']}); "
          f"score {report['score']['name']} > {report['score']['threshold']:.4g}")
    print(f"{'model':<18} {'bytes':>10} {'max|dp| mixed':>14} {'ID labels':>10} "
          f"{'ID classes':>10} {'mixed decisions':>16} {'ms/img b1':>10} {'ms/img b256':>12}")
    lat = report["latency_ms_per_image"]
    print(f"{'keras_backbone':<18} {'':>10} {'':>14} {'':>10} {'':>10} {'':>16} "
          f"{lat['1']['keras_backbone']:>10.3f} {lat['256']['keras_backbone']:>12.4f}")
    print(f"{'savedmodel':<18} {report['sizes_bytes']['savedmodel']:>10} {'(reference)':>14} "
          f"{'':>10} {'':>10} {'':>16} {lat['1']['savedmodel']:>10.3f} "
          f"{lat['256']['savedmodel']:>12.4f}")
    for variant, entry in report["tflite_vs_savedmodel"].items():
        name = f"tflite_{variant}"
        print(f"{name:<18} {report['sizes_bytes'][name]:>10} "
              f"{entry['mixed']['max_abs_probabilities']:>14.2e} "
              f"{entry['id']['label_agreement']:>10.2%} "
              f"{entry['id']['class_agreement']:>10.2%} "
              f"{entry['mixed']['decision_agreement']:>16.2%} "
              f"{lat['1'][name]:>10.3f} {lat['256'][name]:>12.4f}")
    ratios = report["savedmodel_over_backbone"]
    print(f"SavedModel / backbone latency: batch 1 {ratios['1']:.3f}, batch 256 "
          f"{ratios['256']:.3f} (limit {LATENCY_RATIO_LIMIT})")
    print(f"rejected by the SavedModel: ID {report['rejected_fraction_savedmodel']['id']:.2%}, "
          f"OOD {report['rejected_fraction_savedmodel']['ood']:.2%}")
    for name, ok in report["checks"].items():
        print(f"  {'PASS' if ok else 'FAIL'} {name}")


if __name__ == "__main__":
    main()
