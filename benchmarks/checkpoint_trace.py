"""Test accuracy and garbage-class OOD metrics of every checkpoint of a run, epoch by epoch.

    python benchmarks/checkpoint_trace.py RUN_DIR --ood mnist [--checkpoints DIR] [--output FILE]

For runs with a garbage (OOD) class: `tie`, `static`, `cvae`. A run folder keeps its newest
`checkpoint_keep` checkpoints (default 2); train with `--set checkpoint_keep=0` to keep all of
them, or pass `--checkpoints` a folder of `epoch_NNNN` copies. Each checkpoint's classifier is
loaded into the run's model.keras and scored on the whole ID test set and on each OOD set
(loaded by the same code as `keras-tie evaluate`): ID accuracy
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

from keras_tie._io import atomic_write_bytes

TITLE = "Epoch-by-epoch trace of {run} (ID = {dataset})"


def restore(model, directory):
    """Loads the classifier weights of the checkpoint `directory` into `model` (the run's
    model.keras, which has the checkpointed classifier's architecture)."""
    import tensorflow as tf

    status = tf.train.Checkpoint(classifier=model).read(os.path.join(directory, "ckpt"))
    # Every classifier weight must be found; the optimizer's and the pool's are not wanted.
    status.assert_existing_objects_matched().expect_partial()


def trace(run_dir, ood_names, checkpoints=None, data_dir=None):
    """One dict per checkpoint: epoch, accuracy, id_to_garbage, and per OOD set
    `<name>_to_garbage`, `<name>_auroc`, `<name>_fpr95` (all fractions).

    The sets are loaded as `keras-tie evaluate` loads them (the same loader)."""
    from keras_tie.evaluation.protocol import _Data
    from keras_tie.evaluation.runs import load_run
    from keras_tie.inference import predict_probabilities
    from keras_tie.metrics import auroc, fpr_at_tpr

    run = load_run(run_dir)
    if run.garbage_index is None:
        raise ValueError(f"{run_dir!r} is a {run.method!r} run without a garbage class; the "
                         "trace scores the garbage class (tie, static, cvae runs).")
    root = checkpoints or os.path.join(run_dir, "checkpoints")
    folders = sorted(glob.glob(os.path.join(root, "epoch_*")))
    if not folders:
        raise FileNotFoundError(f"No epoch_* checkpoint folders in {root!r}.")
    data = _Data([run], None, 0, data_dir, print)
    ood = {name: data.ood_set(name).images for name in ood_names}
    garbage = run.garbage_index
    rows = []
    for folder in folders:
        restore(run.model, folder)
        p_id = predict_probabilities(run.model, data.id_test.images)
        row = {"epoch": int(os.path.basename(folder).split("_")[1]),
               "accuracy": float(np.mean(p_id.argmax(1) == data.id_test.labels)),
               "id_to_garbage": float(np.mean(p_id.argmax(1) == garbage))}
        for name, images in ood.items():
            p_ood = predict_probabilities(run.model, images)
            row[f"{name}_to_garbage"] = float(np.mean(p_ood.argmax(1) == garbage))
            row[f"{name}_auroc"] = auroc(p_id[:, garbage], p_ood[:, garbage])
            row[f"{name}_fpr95"] = fpr_at_tpr(p_id[:, garbage], p_ood[:, garbage])
        rows.append(row)
        print(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                       for k, v in row.items()), flush=True)
    return run.info, rows


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
