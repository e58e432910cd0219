"""Test accuracy and garbage-class OOD metrics of every checkpoint of a run, epoch by epoch.

    python benchmarks/checkpoint_trace.py RUN_DIR --ood mnist [--checkpoints DIR] [--output FILE]

For runs with a garbage (OOD) class: `tie`, `static`, `cvae`. A run folder keeps its newest
`checkpoint_keep` checkpoints (default 2); train with `--set checkpoint_keep=0` to keep all of
them, or pass `--checkpoints` a folder of `epoch_NNNN` copies. Each checkpoint's classifier is
restored into the run's architecture and scored on the whole ID test set and on each OOD set
(converted to the ID image shape; synthetic sets as in `keras-tie evaluate`): ID accuracy
over the n+1 outputs, the share of ID test images sent to the garbage class, and per OOD set
the share sent to the garbage class and the garbage probability's AUROC and FPR@95%TPR
(`keras_tie.metrics`).

The checkpoints hold the weights as trained: the BatchNormalization recalibration that the
`cvae` method applies before saving model.keras is not applied here, so for a BatchNorm
backbone the last row can differ a little from the saved model's figures (`cnn2` has no
BatchNorm and matches exactly).

What it shows: how far a single run's OOD figures move from epoch to epoch, i.e. how much a
result picked by hand from test metrics printed each epoch (as the CVAE paper's released code
did) gains over a fixed budget.
"""

import argparse
import glob
import os

import numpy as np

from keras_tie._io import atomic_write_bytes, read_json

TITLE = "Epoch-by-epoch trace of {run} (ID = {dataset})"


def restore_classifier(run_info, directory):
    """The run's classifier with the weights of the checkpoint `directory`."""
    import tensorflow as tf

    from keras_tie.models.backbones import build_classifier

    model = run_info["config"]["model"]
    norm = run_info["normalization"]
    classifier = build_classifier(
        tuple(run_info["image_shape"]), run_info["num_outputs"], model["backbone"],
        model["width"], model["dense_units"], np.asarray(norm["mean"], np.float32),
        np.asarray(norm["variance"], np.float32), model["bn_momentum"], model["dropout"])
    status = tf.train.Checkpoint(classifier=classifier).read(os.path.join(directory, "ckpt"))
    # Every classifier weight must be found; the optimizer's and the pool's are not wanted.
    status.assert_existing_objects_matched().expect_partial()
    return classifier


def load_sets(run_info, ood_names, data_dir):
    """(ID test Dataset, {name: OOD test images}), as `keras-tie evaluate` loads them."""
    from keras_tie.data import load, registry

    dataset = run_info["dataset"]
    shape = tuple(run_info["image_shape"])
    id_test = load(dataset, "test", data_dir=data_dir)
    ood = {}
    for name in ood_names:
        if registry.resolve(name).kind == registry.SYNTHETIC:
            like = load(dataset, "train", data_dir=data_dir) if name == "sphere" else shape
            ood[name] = load(name, "test", like=like, seed=0).images
        else:
            ood[name] = load(name, "test", data_dir=data_dir, target_shape=shape).images
    return id_test, ood


def _probabilities(classifier, images):
    import tensorflow as tf

    from keras_tie.data.dataset import to_float

    logits = classifier.predict(to_float(images), batch_size=1000, verbose=0)
    return tf.nn.softmax(logits).numpy()


def trace(run_dir, ood_names, checkpoints=None, data_dir=None):
    """One dict per checkpoint: epoch, accuracy, id_to_garbage, and per OOD set
    `<name>_to_garbage`, `<name>_auroc`, `<name>_fpr95` (all fractions)."""
    from keras_tie.metrics import auroc, fpr_at_tpr

    run_info = read_json(os.path.join(run_dir, "run.json"))
    if run_info.get("garbage_index") is None:
        raise ValueError(f"{run_dir!r} is a {run_info.get('method')!r} run without a garbage "
                         "class; the trace scores the garbage class (tie, static, cvae runs).")
    folders = sorted(glob.glob(os.path.join(checkpoints or os.path.join(run_dir, "checkpoints"),
                                            "epoch_*")))
    if not folders:
        raise FileNotFoundError(f"No epoch_* checkpoint folders in "
                                f"{checkpoints or os.path.join(run_dir, 'checkpoints')!r}.")
    garbage = run_info["garbage_index"]
    id_test, ood = load_sets(run_info, ood_names,
                             data_dir or run_info["config"].get("data_dir") or None)
    rows = []
    for folder in folders:
        classifier = restore_classifier(run_info, folder)
        p_id = _probabilities(classifier, id_test.images)
        row = {"epoch": int(os.path.basename(folder).split("_")[1]),
               "accuracy": float(np.mean(p_id.argmax(1) == id_test.labels)),
               "id_to_garbage": float(np.mean(p_id.argmax(1) == garbage))}
        for name, images in ood.items():
            p_ood = _probabilities(classifier, images)
            row[f"{name}_to_garbage"] = float(np.mean(p_ood.argmax(1) == garbage))
            row[f"{name}_auroc"] = auroc(p_id[:, garbage], p_ood[:, garbage])
            row[f"{name}_fpr95"] = fpr_at_tpr(p_id[:, garbage], p_ood[:, garbage])
        rows.append(row)
        print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                       for k, v in row.items()), flush=True)
    return run_info, rows


def to_markdown(run_dir, run_info, rows, ood_names, command):
    head = ["epoch", "ID acc.", "ID to garbage"]
    for name in ood_names:
        head += [f"{name} to garbage", f"{name} AUROC", f"{name} FPR@95"]
    title = TITLE.format(run=os.path.basename(os.path.normpath(run_dir)),
                         dataset=run_info["dataset"])
    backbone = run_info["config"]["model"]["backbone"]
    lines = [f"# {title}", "",
             f"Method `{run_info['method']}`, backbone `{backbone}`. Score: the garbage-class "
             f"probability; all test images. Metrics in %. Produced by `{command}`.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row["epoch"]), f"{100 * row['accuracy']:.2f}",
                 f"{100 * row['id_to_garbage']:.2f}"]
        for name in ood_names:
            cells += [f"{100 * row[f'{name}_{key}']:.1f}"
                      for key in ("to_garbage", "auroc", "fpr95")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--ood", default="mnist", help="comma-separated OOD sets")
    parser.add_argument("--checkpoints", help="folder of epoch_NNNN checkpoints "
                        "(default RUN_DIR/checkpoints)")
    parser.add_argument("--data-dir")
    parser.add_argument("--output", help="markdown file to write")
    args = parser.parse_args(argv)
    names = [n for n in args.ood.split(",") if n]
    run_info, rows = trace(args.run_dir, names, args.checkpoints, args.data_dir)
    if args.output:
        command = "python benchmarks/checkpoint_trace.py " + " ".join(
            sys.argv[1:] if argv is None else argv)
        text = to_markdown(args.run_dir, run_info, rows, names, command)
        atomic_write_bytes(args.output, text.encode())
        print(f"Wrote {args.output}")


if __name__ == "__main__":
    main()
