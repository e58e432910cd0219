"""Speed benchmarks as ratios on one machine, in one process (issue 9: "Reproduction report,
benchmarks and multi-device training").

    python benchmarks/speed.py [--run-dir RUN] [--dataset mnist] [--limit 12800]
                               [--flow-steps 2] [--quick] [--output benchmarks/results/speed]

Measures, one after the other in this process, so every number comes from the
same machine under the same load, and reports ratios (which a background job
disturbs less than absolute times):

1. TIE epoch / plain classifier epoch: the dataset's preset trained with
   method `tie` and `plain` (`tie_epoch_speed.epoch_seconds`). An "epoch" is
   a proportional slice of the real one: `--limit` training images, with the
   inverted samples per class, the generator steps and the tau_t sample
   scaled by limit / (training set size), so a slice costs what the same
   share of a full epoch costs. Two epochs each; the ratio is of the second
   (the first includes tracing).
2. Flow step with / without the approximate-mass penalty (alpha 2 / 64 and 0): the
   flow preset (configs/flow_DATASET.toml) at full size, `--flow-steps`
   compiled train steps on one real batch after the tracing step
   (`flow_table1.step_times`; median). Steps, not epochs: at full size a
   step takes seconds on a CPU.
3. Exported SavedModel / bare Keras backbone latency at batch 1 and 256, and
   TFLite float32 and int8 latency per image (`export_benchmark.
   latency_per_image`, the run exported by `keras_tie.export.export_run`).
4. Evaluation throughput, images/s, per score: `get_detector(name, model)
   .fit(train).score(test)` for every classifier score of the run (fit time
   reported apart), the flow scores on the preset flow of step 2 and the
   repair score on a repair network of the repair preset's size (untrained:
   speed does not depend on the weights).

`--run-dir` is a finished classifier run (TIE, for the garbage scores);
without it a short TIE run of the preset's architecture is trained first
(1 epoch on --limit images: weights do not change latency). `--quick`
shrinks everything for a smoke test (tiny slices, flow width 8): its numbers
are not the benchmark.

Prints a table and writes OUTPUT.json and OUTPUT.md.
"""

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

from keras_tie import run_folder

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TRAIN_SIZE = {"mnist": 60_000, "fashion_mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000}


def tie_over_plain(dataset, limit, data_dir):
    """Seconds of the second epoch of TIE and of plain on a proportional `limit`-image slice."""
    from tie_epoch_speed import epoch_seconds

    from keras_tie.config import Config, preset_path

    base = Config.load(preset_path(dataset), {"dataset": dataset, "data_dir": data_dir})
    share = min(limit / TRAIN_SIZE.get(dataset, limit), 1.0)
    t = base.tie
    tie = Config.load(preset_path(dataset), {
        "dataset": dataset, "data_dir": data_dir, "epochs": 2, "limit": limit,
        "tie.samples_per_class": max(round(t.samples_per_class * share), 1),
        "tie.generator_steps_per_epoch": max(round(t.generator_steps_per_epoch * share), 1),
        "tie.threshold_samples": max(round(t.threshold_samples * share), 0)
        if t.threshold_samples else 0,
    })
    results = epoch_seconds({"plain": tie.replace(method="plain"), "tie": tie}, verbose=0)
    plain, tie_s = results["plain"]["epoch_seconds"][-1], results["tie"]["epoch_seconds"][-1]
    return {"train_images": limit, "share_of_full_epoch": share,
            "scaled": {"samples_per_class": tie.tie.samples_per_class,
                       "generator_steps_per_epoch": tie.tie.generator_steps_per_epoch,
                       "threshold_samples": tie.tie.threshold_samples},
            "epoch_seconds": {"plain": results["plain"]["epoch_seconds"],
                              "tie": results["tie"]["epoch_seconds"]},
            "ratio": tie_s / plain}


def flow_penalty(dataset, steps, data_dir, width=None):
    """Median seconds per compiled flow step with the preset's alpha and 0, and their ratio."""
    from flow_table1 import step_times

    from keras_tie.config import Config, preset_path

    overrides = {"dataset": dataset, "data_dir": data_dir}
    if width:
        overrides["flow.width"] = width
    config = Config.load(preset_path(f"flow_{dataset}"), overrides)
    times = step_times(config, steps, data_dir)
    return {"batch_size": config.batch_size, "width": config.flow.width,
            "parameters": times["penalized"]["parameters"], "timed_steps": steps,
            "step_seconds": {"penalized": times["penalized"]["median_step_seconds"],
                             "vanilla": times["vanilla"]["median_step_seconds"]},
            "ratio": times["penalized"]["median_step_seconds"]
            / times["vanilla"]["median_step_seconds"]}, config


def export_latency(run_dir, data_dir, repeats, images):
    """SavedModel / backbone latency ratios at batch 1 and 256, TFLite float32 and int8 ms/image."""

    from export_benchmark import _pixels, latency_per_image

    from keras_tie.data import load
    from keras_tie.export import ExportedModel, export_run

    with tempfile.TemporaryDirectory() as scratch:
        result = export_run(run_dir, os.path.join(scratch, "model"), tflite=["float32", "int8"],
                            data_dir=data_dir)
        dataset = result.metadata["source_run"]["dataset"]
        pixels = _pixels(load(dataset, split="test", data_dir=data_dir, limit=images).images)
        classifier = run_folder.load_model(run_folder.run_path(run_dir, run_folder.MODEL_FILE))
        saved = ExportedModel(result.path)
        lite = {v: ExportedModel(os.path.join(result.path, info["file"]))
                for v, info in result.metadata["tflite"].items()}
        latency = latency_per_image(classifier, saved, lite, pixels, repeats)
    return {"ms_per_image": {str(b): v for b, v in latency.items()},
            "savedmodel_over_backbone": {str(b): v["savedmodel"] / v["keras_backbone"]
                                         for b, v in latency.items()}}


def evaluation_throughput(run_dir, flow_config, data_dir, images, flow_images):
    """Images/s of `score` (and seconds of `fit`) per detector."""

    from keras_tie._io import read_json
    from keras_tie.config import Config, preset_path
    from keras_tie.data import load
    from keras_tie.detectors import get_detector
    from keras_tie.methods.flow.realnvp import RealNVP
    from keras_tie.methods.repair.model import RepairModel
    from keras_tie.methods.repair.perceptual import PerceptualDistance
    from keras_tie.methods.repair.unet import build_repair_unet

    info = read_json(os.path.join(run_dir, "run.json"))
    dataset = info["dataset"]
    classifier = run_folder.load_model(run_folder.run_path(run_dir, run_folder.MODEL_FILE))
    train = load(dataset, split="train", data_dir=data_dir, limit=images)
    test = load(dataset, split="test", data_dir=data_dir, limit=images)
    garbage = info.get("garbage_index")
    names = ["msp", "energy", "entropy", "ue", "odin", "mahalanobis"]
    if garbage is not None:
        names += ["garbage", "ue@n+1", "energy@n+1"]
    detectors = {name: (get_detector(name, classifier, garbage_index=garbage)
                        if garbage is not None else get_detector(name, classifier), test.images)
                 for name in names}
    f = flow_config.flow
    flow = RealNVP(tuple(info["image_shape"]), f.scales, f.blocks, f.width, f.logit_boundary)
    for name in ("nll", "approximate_mass"):
        detectors[name] = (get_detector(name, flow), test.images[:flow_images])
    r = Config.load(preset_path(f"repair_{dataset}"), {"dataset": dataset}).repair \
        if preset_path(f"repair_{dataset}") else Config().repair
    repair = RepairModel(build_repair_unet(tuple(info["image_shape"]), r.width, r.depth, r.skips),
                         ["down2", "down4"], PerceptualDistance.from_network(classifier))
    detectors["repair"] = (get_detector("repair", repair), test.images)

    results = {}
    for name, (detector, scored) in detectors.items():
        start = time.perf_counter()
        detector.fit(train.images, train.labels)
        fit_seconds = time.perf_counter() - start
        detector.score(scored[:64])  # tracing
        start = time.perf_counter()
        scores = detector.score(scored)
        seconds = time.perf_counter() - start
        assert np.isfinite(scores).all(), name
        results[name] = {"images": int(len(scored)), "images_per_second": len(scored) / seconds,
                         "fit_seconds": fit_seconds}
    return results


def train_short_run(dataset, limit, data_dir, folder):
    """A 1-epoch TIE run of the preset's architecture (for latency and throughput only)."""
    from keras_tie.config import Config, preset_path
    from keras_tie.training.runner import train

    config = Config.load(preset_path(dataset), {
        "dataset": dataset, "data_dir": data_dir, "epochs": 1, "limit": limit,
        "tie.samples_per_class": 20, "tie.generator_steps_per_epoch": 2})
    train(config, folder, verbose=0)
    return folder


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default=None, help="A finished TIE run (default: train one).")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--limit", type=int, default=12_800,
                        help="Training images of a measured epoch (100 steps of 128).")
    parser.add_argument("--flow-steps", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=100, help="Latency rounds at batch 1.")
    parser.add_argument("--eval-images", type=int, default=2000)
    parser.add_argument("--flow-images", type=int, default=128)
    parser.add_argument("--data-dir", default=os.environ.get("KERAS_TIE_DATA_DIR"))
    parser.add_argument("--quick", action="store_true",
                        help="Tiny sizes for a smoke test (not the benchmark).")
    parser.add_argument("--output", default=None,
                        help="Prefix of the .json and .md (default benchmarks/results/speed).")
    args = parser.parse_args()
    if args.quick:
        args.limit, args.flow_steps, args.repeats = 1280, 1, 10
        args.eval_images, args.flow_images = 256, 16

    import tensorflow as tf

    report = {"machine": machine(), "tensorflow": tf.__version__, "dataset": args.dataset,
              "quick": args.quick, "load_average_before": os.getloadavg()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = args.run_dir or train_short_run(args.dataset, min(args.limit, 2048),
                                                  args.data_dir, os.path.join(scratch, "run"))
        report["run_dir"] = os.path.abspath(args.run_dir) if args.run_dir else \
            "trained by speed.py (1 epoch; weights do not change speed)"
        print("1/4 TIE and plain epochs ...", flush=True)
        report["tie_over_plain"] = tie_over_plain(args.dataset, args.limit, args.data_dir)
        print("2/4 flow steps ...", flush=True)
        report["flow_penalty"], flow_config = flow_penalty(
            args.dataset, args.flow_steps, args.data_dir, width=8 if args.quick else None)
        print("3/4 export latency ...", flush=True)
        report["export"] = export_latency(run_dir, args.data_dir, args.repeats,
                                          max(256, args.eval_images))
        print("4/4 evaluation throughput ...", flush=True)
        report["evaluation"] = evaluation_throughput(run_dir, flow_config, args.data_dir,
                                                     args.eval_images, args.flow_images)
    report["total_seconds"] = time.perf_counter() - started
    report["load_average_after"] = os.getloadavg()

    table = markdown(report)
    print(table)
    prefix = args.output or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                         "speed")
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    with open(prefix + ".json", "w") as f:
        json.dump(report, f, indent=2)
    with open(prefix + ".md", "w") as f:
        f.write(table)
    print(f"wrote {prefix}.json and {prefix}.md")


def machine():
    """CPU model, core count, Python: where the numbers come from."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} CPUs, no GPU, Python {platform.python_version()}"


def markdown(report):
    """The report as a Markdown table with its machine and method notes."""
    t, fl, ex, ev = (report["tie_over_plain"], report["flow_penalty"], report["export"],
                     report["evaluation"])
    ms = ex["ms_per_image"]
    lines = [
        f"# Speed ({report['dataset']}"
        f"{', --quick: smoke test, not the benchmark' if report['quick'] else ''})",
        "",
        f"Machine: {report['machine']}, TensorFlow {report['tensorflow']}. Load average "
        f"{report['load_average_before'][0]:.1f} before, {report['load_average_after'][0]:.1f} "
        "after (a shared CPU: other jobs ran; ratios are measured in one process, "
        "absolute times are noisy). Produced by `python benchmarks/speed.py` in "
        f"{report['total_seconds'] / 60:.0f} min; run: {report['run_dir']}.",
        "",
        "| measurement | value | how |",
        "|---|---|---|",
        f"| TIE epoch / plain epoch | **{t['ratio']:.2f}** | second epoch of each: "
        f"{t['epoch_seconds']['tie'][-1]:.1f} s / {t['epoch_seconds']['plain'][-1]:.1f} s on "
        f"{t['train_images']} images ({t['share_of_full_epoch']:.0%} of an epoch; inverted "
        f"samples, generator steps and tau_t sample scaled alike) |",
        f"| flow step with / without penalty | **{fl['ratio']:.2f}** | median of "
        f"{fl['timed_steps']} compiled steps after tracing (steps, not epochs): "
        f"{fl['step_seconds']['penalized']:.2f} s / {fl['step_seconds']['vanilla']:.2f} s, "
        f"batch {fl['batch_size']}, width {fl['width']}, {fl['parameters'] / 1e6:.1f} M "
        "parameters |",
    ]
    for batch in ("1", "256"):
        lines.append(
            f"| SavedModel / bare backbone, batch {batch} | "
            f"**{ex['savedmodel_over_backbone'][batch]:.2f}** | "
            f"{ms[batch]['savedmodel']:.3f} / {ms[batch]['keras_backbone']:.3f} ms per image, "
            "median of alternating calls |")
    for variant in ("float32", "int8"):
        key = f"tflite_{variant}"
        if key in ms["1"]:
            lines.append(f"| TFLite {variant}, ms per image | **{ms['1'][key]:.3f}** (batch 1), "
                         f"{ms['256'][key]:.4f} (batch 256) | LiteRT interpreter; backbone: "
                         f"{ms['1']['keras_backbone']:.3f} / {ms['256']['keras_backbone']:.4f} |")
    lines += ["", "Evaluation throughput, `get_detector(name, model).fit(train).score(test)`:", "",
              "| score | images/s | scored images | fit s |", "|---|---|---|---|"]
    for name, r in ev.items():
        lines.append(f"| {name} | {r['images_per_second']:.0f} | {r['images']} | "
                     f"{r['fit_seconds']:.2f} |")
    lines += ["", f"Flow scores use the flow of the row above (width {fl['width']}, untrained), "
              "repair a U-Net of the repair preset's size with the run's classifier as perception "
              "network (untrained): throughput does not depend on the weights. The first call of "
              "each score (tracing) is not timed.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
