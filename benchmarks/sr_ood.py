"""SR-OOD benchmark: the three variants with the same budget, perceptual vs L2, layer ablation.

For one in-distribution dataset (preset configs/repair_DATASET.toml):

1. the perception network: `--perceptual RUN_DIR_OR_FILE`, else a plain
   classifier trained here (preset configs/DATASET.toml, method plain,
   `--classifier-epochs` epochs, the same `--limit`);
2. trains the three SR-OOD variants with the same budget (`--epochs`,
   `--limit`): reconstruction (identity, SR-OOD_Rec), inpainting (black
   boxes, SR-OOD_Inpaint), super-resolution (bicubic downsampling, SR-OOD_SR);
   each chooses its test operator T* on its validation split vs `vflip`
   (the preset's `repair.selection_ood`);
3. scores the ID test split and the OOD sets (cifar10: cifar100, gaussian,
   uniform; fashion_mnist: mnist, gaussian, uniform) at T*, and reports
   AUROC and FPR@95%TPR (ID positive) for the distances L2,
   L2 + perceptual (the training loss, lambda-weighted) and perceptual
   (paper Table IV), and for the perceptual distance on each single layer of
   the perception network (which layers separate best);
4. times a full-size training epoch: `--time-steps` steps of the preset's
   batch on real images after one traced warm-up step, extrapolated to the
   steps of one epoch over the full training set (minus the validation
   split).

    python benchmarks/sr_ood.py --dataset cifar10 --epochs 1 --limit 256   # smoke test
    python benchmarks/sr_ood.py --dataset fashion_mnist --perceptual runs/fmnist_plain

Writes benchmarks/results/sr_ood_DATASET.md and .json. Numbers from a
tiny budget show that the pipeline runs, not how well SR-OOD works.
"""

import argparse
import dataclasses
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np

from keras_tie import run_folder

OOD_SETS = {"cifar10": ("cifar100", "gaussian", "uniform"),
            "fashion_mnist": ("mnist", "gaussian", "uniform")}
VARIANTS = ("reconstruction", "inpaint", "superres")
SYNTHETIC = ("gaussian", "uniform", "sphere")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="cifar10", choices=sorted(OOD_SETS))
    parser.add_argument("--epochs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--limit", type=int, default=0, help="training images (0: all)")
    parser.add_argument("--eval-limit", type=int, default=2000,
                        help="images per evaluation set (ID test and each OOD set)")
    parser.add_argument("--perceptual", default=None,
                        help="perception network: classifier run folder or .keras file")
    parser.add_argument("--classifier-epochs", type=int, default=5,
                        help="epochs of the plain classifier trained when --perceptual is absent")
    parser.add_argument("--time-steps", type=int, default=5)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a preset key for every variant "
                        "(repeatable), e.g. --set repair.skips=false --set repair.width=16")
    parser.add_argument("--tag", default="", help="suffix of the result files: "
                        "sr_ood_DATASET_TAG.md (default: sr_ood_DATASET.md)")
    parser.add_argument("--runs", default=None, help="keep the run folders here (default: "
                        "a temporary folder)")
    args = parser.parse_args()

    from keras_tie.config import Config, parse_override, preset_path
    from keras_tie.training.runner import train

    overrides = dict(parse_override(text) for text in args.overrides)
    overrides.update({"limit": args.limit, "data_dir": args.data_dir or ""})
    if args.epochs:
        overrides["epochs"] = args.epochs
    preset = preset_path(f"repair_{args.dataset}")
    base = Config.load(preset, overrides)
    started = time.perf_counter()
    report = {"command": " ".join(["python benchmarks/sr_ood.py", *sys.argv[1:]]),
              "dataset": args.dataset, "tag": args.tag, "epochs": base.epochs,
              "preset_epochs": Config.load(preset).epochs,
              "limit": args.limit, "overrides": args.overrides,
              "eval_limit": args.eval_limit, "machine": platform.platform(),
              "cpu_count": os.cpu_count(), "preset": f"configs/repair_{args.dataset}.toml",
              "repair": dataclasses.asdict(base.repair)}
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = args.runs or scratch
        perceptual = args.perceptual
        if perceptual is None:
            classifier = Config.load(preset_path(args.dataset), {
                "method": "plain", "epochs": args.classifier_epochs, "limit": args.limit,
                "data_dir": args.data_dir or ""})
            perceptual = os.path.join(runs_dir, "classifier")
            t0 = time.perf_counter()
            result = train(classifier, perceptual, verbose=2)
            report["perception_network"] = {
                "trained_here": True, "epochs": args.classifier_epochs,
                "test_accuracy": result.test_metrics.get("accuracy"),
                "seconds": time.perf_counter() - t0}
        else:
            report["perception_network"] = {"trained_here": False,
                                            "source": os.path.abspath(perceptual),
                                            "test_accuracy": _run_accuracy(perceptual)}

        report["epoch_time"] = time_full_epoch(base, perceptual, args.time_steps)
        models, report["variants"] = {}, {}
        for variant in VARIANTS:
            config = base.replace(repair=dataclasses.replace(base.repair, variant=variant,
                                                             perceptual=perceptual))
            run_dir = os.path.join(runs_dir, variant)
            t0 = time.perf_counter()
            result = train(config, run_dir, verbose=2)
            with open(os.path.join(run_dir, "run.json"), encoding="utf-8") as f:
                info = json.load(f)
            report["variants"][variant] = {
                "train_seconds": time.perf_counter() - t0,
                "operators": info["repair"]["operators"],
                "test_operator": info["repair"]["test_operator"],
                "selection": info["repair"]["selection"],
                "final_loss": result.history[-1].get("loss") if result.history else None,
                "final_val_loss": result.history[-1].get("val_loss") if result.history else None}
            models[variant] = _load(os.path.join(run_dir, "model.keras"))
        report["results"] = evaluate(models, args.dataset, args.eval_limit, args.data_dir)
    report["total_seconds"] = time.perf_counter() - started
    write(report, args.output)


def _run_accuracy(path):
    """Test accuracy recorded in a classifier run folder's run.json, or None (a .keras file)."""
    from keras_tie._io import read_json

    try:
        return read_json(os.path.join(path, "run.json")).get("test_metrics", {}).get("accuracy")
    except (OSError, ValueError):
        return None


def time_full_epoch(config, perceptual, steps):
    """Seconds per training step of each variant (after a traced warm-up), and the extrapolated
    seconds of one epoch over the full training set."""
    import tensorflow as tf

    from keras_tie.data import load
    from keras_tie.methods.repair.recipe import build_repair_model

    full = load(config.dataset, "train", data_dir=config.data_dir or None)
    train_images = len(full) - int(round(len(full) * config.validation_split))
    steps_per_epoch = train_images // config.batch_size
    batch = tf.constant(full.images[:config.batch_size].astype(np.float32) / 255.0)
    timing = {"batch_size": config.batch_size, "full_train_images": train_images,
              "steps_per_epoch": steps_per_epoch, "measured_steps": steps, "variants": {}}
    for variant in VARIANTS:
        repair = dataclasses.replace(config.repair, variant=variant, perceptual=perceptual)
        model, _ = build_repair_model(config.replace(repair=repair), full.info, [])
        step = tf.function(model.train_step)
        step(batch)  # trace
        t0 = time.perf_counter()
        for _ in range(steps):
            logs = step(batch)
        float(logs["loss"])  # wait for the last step
        per_step = (time.perf_counter() - t0) / steps
        timing["variants"][variant] = {"seconds_per_step": per_step,
                                       "seconds_per_epoch": per_step * steps_per_epoch}
    return timing


def evaluate(models, dataset, limit, data_dir):
    """AUROC and FPR@95 per variant, distance and OOD set; per-layer AUROC."""
    import tensorflow as tf

    from keras_tie import metrics
    from keras_tie.data import load

    id_test = load(dataset, "test", data_dir=data_dir, limit=limit)
    shape = id_test.info.image_shape
    sets = {}
    for name in OOD_SETS[dataset]:
        sets[name] = (load(name, "test", like=shape, count=len(id_test), seed=0)
                      if name in SYNTHETIC else
                      load(name, "test", data_dir=data_dir, limit=limit, target_shape=shape))
    results = {"id_images": len(id_test), "ood_images": {n: len(d) for n, d in sets.items()},
               "by_variant": {}}
    for variant, model in models.items():
        lam1, lam2 = model.lambda_l2, model.lambda_perceptual
        function = tf.function(lambda x, model=model: model.repair_distances(x),
                               input_signature=[tf.TensorSpec([None, *model.image_shape])])
        id_d = distances(function, id_test.images)
        layers = list(model.perceptual.layer_names) if model.perceptual is not None else []
        rows = {}
        for name, ood in sets.items():
            ood_d = distances(function, ood.images)
            scores = {"l2": (id_d["l2"], ood_d["l2"])}
            if layers:
                id_p, ood_p = id_d["per_layer"].sum(-1), ood_d["per_layer"].sum(-1)
                scores["l2+perceptual"] = (lam1 * id_d["l2"] + lam2 * id_p,
                                           lam1 * ood_d["l2"] + lam2 * ood_p)
                scores["perceptual"] = (id_p, ood_p)
                for i, layer in enumerate(layers):
                    scores[f"layer:{layer}"] = (id_d["per_layer"][:, i], ood_d["per_layer"][:, i])
            rows[name] = {score: {key: found[key] for key in ("auroc", "fpr_at_95_tpr")}
                          for score, pair in scores.items()
                          for found in [metrics.ood_metrics(*pair)]}
        results["by_variant"][variant] = {"test_operator": model.test_operator,
                                          "layers": layers, "by_ood_set": rows}
    return results


def distances(function, images, batch_size=256):
    """{"l2": [N], "per_layer": [N, L]}: `function` (a traced model.repair_distances at the
    model's test operator) over `images`, in batches."""
    import tensorflow as tf

    parts = {}
    for start in range(0, len(images), batch_size):
        chunk = np.asarray(images[start: start + batch_size])
        chunk = chunk.astype(np.float32) / 255.0 if chunk.dtype == np.uint8 else chunk
        for key, value in function(tf.constant(chunk, tf.float32)).items():
            parts.setdefault(key, []).append(value.numpy().astype(np.float64))
    return {key: np.concatenate(value) for key, value in parts.items()}


def _load(path):


    return run_folder.load_model(path)


def write(report, output):
    os.makedirs(output, exist_ok=True)
    suffix = f"_{report['tag']}" if report.get("tag") else ""
    stem = os.path.join(output, f"sr_ood_{report['dataset']}{suffix}")
    with open(f"{stem}.json", "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, sort_keys=True, default=float)
        f.write("\n")
    with open(f"{stem}.md", "w", encoding="utf-8") as f:
        f.write(markdown(report))
    print(markdown(report))
    print(f"Wrote {stem}.md and {stem}.json")


def markdown(report):
    results = report["results"]
    ood_names = [n for n in OOD_SETS[report["dataset"]] if n in results["ood_images"]]
    by_variant = {v: results["by_variant"][v] for v in VARIANTS if v in results["by_variant"]}
    timing = report["epoch_time"]
    perception = report["perception_network"]
    out = [f"# SR-OOD on {report['dataset']}", "",
           f"`{report['command']}` ({report['cpu_count']} CPU cores, "
           f"{report['total_seconds'] / 60:.1f} min in all). Preset {report['preset']}.", "",
           f"- Budget: {report['epochs']} epoch(s) per variant on "
           + (f"{report['limit']} training images" if report["limit"] else "the full training set")
           + "; every variant gets the same."
           + (" Overrides of the preset: " + ", ".join(f"`{o}`" for o in report["overrides"]) + "."
              if report.get("overrides") else ""),
           "- Perception network: " + (
               f"a plain classifier trained here for {perception['epochs']} epoch(s) "
               f"(test accuracy {perception['test_accuracy']:.4f})" if perception["trained_here"]
               else f"`{perception['source']}`"
               + (f" (test accuracy {perception['test_accuracy']:.4f})"
                  if perception.get("test_accuracy") is not None else ""))
           + "; uniform layer weights (no LPIPS heads).",
           f"- Evaluation: {results['id_images']} ID test images; OOD: "
           + ", ".join(f"{n} {results['ood_images'][n]}" for n in ood_names) + ".",
           "- Scores at each variant's T*, chosen on its validation split vs `vflip` (held-out "
           "ID images upside down) by AUROC. AUROC in %, FPR@95%TPR in % (ID positive).", ""]
    preset_epochs = report.get("preset_epochs")
    if report["limit"] or report["epochs"] < (preset_epochs or 5) or report.get("overrides"):
        out += ["**Below the preset's budget"
                + (f" ({preset_epochs} epochs on the full training set)" if preset_epochs else "")
                + ": compare the variants with each other, not with the paper's numbers.**", ""]

    out += ["## Variants (paper Table I): perceptual distance", "",
            "| variant | T* | " + " | ".join(f"{n} AUROC / FPR95" for n in ood_names) + " |",
            "|---|---|" + "---|" * len(ood_names)]
    for variant, found in by_variant.items():
        main_score = "perceptual" if found["layers"] else "l2"
        out.append(f"| {variant} | `{found['test_operator']}` | " + " | ".join(
            _pair(found["by_ood_set"][n][main_score]) for n in ood_names) + " |")
    out += ["", "## Distance (paper Table IV): AUROC / FPR95", ""]
    for variant, found in by_variant.items():
        scores = ["l2", "l2+perceptual", "perceptual"] if found["layers"] else ["l2"]
        out += [f"### {variant}", "", "| distance | " + " | ".join(ood_names) + " |",
                "|---|" + "---|" * len(ood_names)]
        for score in scores:
            out.append(f"| {score} | " + " | ".join(
                _pair(found["by_ood_set"][n][score]) for n in ood_names) + " |")
        out.append("")
    out += ["## Perception layers: AUROC of each layer alone vs all (mean over OOD sets)", "",
            "| variant | " + " | ".join(next(iter(by_variant.values()))["layers"] + ["all"])
            + " |", "|---|" + "---|" * (len(next(iter(by_variant.values()))["layers"]) + 1)]
    for variant, found in by_variant.items():
        if not found["layers"]:
            continue
        means = [np.mean([found["by_ood_set"][n][f"layer:{layer}"]["auroc"] for n in ood_names])
                 for layer in found["layers"]]
        means.append(np.mean([found["by_ood_set"][n]["perceptual"]["auroc"] for n in ood_names]))
        out.append(f"| {variant} | " + " | ".join(f"{100 * m:.2f}" for m in means) + " |")
    out += ["", "## Choice of T* (validation split vs vflip, AUROC %)", ""]
    for variant in by_variant:
        found = report["variants"][variant]
        selection = found["selection"]
        aurocs = selection.get("auroc")
        detail = ", ".join(f"`{k}` {100 * v:.2f}" for k, v in aurocs.items()) if aurocs \
            else selection["by"]
        out.append(f"- {variant}: `{found['test_operator']}` ({detail})")
    out += ["", "## Time", "",
            f"One full-size epoch: {timing['steps_per_epoch']} steps of {timing['batch_size']} "
            f"images ({timing['full_train_images']} training images), extrapolated from "
            f"{timing['measured_steps']} timed steps after a traced warm-up step, on this "
            "machine while it may be shared:", "",
            "| variant | s / step | min / epoch | this run's training (s) |", "|---|---|---|---|"]
    for variant in by_variant:
        found = timing["variants"][variant]
        out.append(f"| {variant} | {found['seconds_per_step']:.3f} | "
                   f"{found['seconds_per_epoch'] / 60:.1f} | "
                   f"{report['variants'][variant]['train_seconds']:.0f} |")
    return "\n".join(out) + "\n"


def _pair(found):
    return f"{100 * found['auroc']:.2f} / {100 * found['fpr_at_95_tpr']:.2f}"


if __name__ == "__main__":
    main()
