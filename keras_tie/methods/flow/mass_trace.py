"""MassTrace: the approximate mass of ID and OOD test images after every epoch (paper, Figure 1)."""

import os

import keras
import numpy as np

from keras_tie import metrics
from keras_tie._io import atomic_write_bytes
from keras_tie.methods.flow.approximate_mass import flow_scores

TRACE_FIGURE = "mass_trace.png"
TRACE_KEYS = ("trace_mass_id", "trace_mass_ood", "trace_nll_id", "trace_nll_ood",
              "trace_auroc_mass", "trace_auroc_nll")


class MassTrace(keras.callbacks.Callback):
    """Scores a fixed set of ID and OOD test images with the flow after each epoch.

    The approximate-mass paper (004_f7d5548531a0fef9.txt, section 3.1,
    Figure 1) watches the approximate mass of CIFAR-10 (ID) and SVHN (OOD)
    during maximum-likelihood training: OOD images start with the larger mass,
    and after some epochs the order flips. This callback adds to `logs` (so
    to the history, history.csv and TensorBoard):

    - `trace_mass_id`, `trace_mass_ood`: mean approximate mass of each set;
    - `trace_nll_id`, `trace_nll_ood`: mean negative log-likelihood (nats);
    - `trace_auroc_mass`, `trace_auroc_nll`: AUROC of each score (ID vs OOD,
      higher score = more OOD, so below 0.5 means the order has flipped);

    and redraws `mass_trace.png` in the run folder: the two mean masses per
    epoch, and the last epoch's histograms. Scores are taken at the bins'
    midpoints, as the detectors take them.

    Args:
        flow: the `RealNVP` being trained.
        id_images, ood_images: uint8 or [0, 1] float images of the flow's shape.
        id_name, ood_name: the sets' names (figure legend).
        run_dir: where the figure goes (None: no figure).
        history: the run's history so far (a resumed run), whose trace
            entries the figure continues.
    """

    def __init__(self, flow, id_images, ood_images, id_name, ood_name, run_dir=None,
                 history=()):
        super().__init__()
        self.flow = flow
        self.id_images = id_images
        self.ood_images = ood_images
        self.id_name = id_name
        self.ood_name = ood_name
        self.run_dir = run_dir
        self.continue_from(history)

    def continue_from(self, history):
        """Starts the figure from the trace entries of `history` (a resumed run's epochs)."""
        self.trace = [{"epoch": r["epoch"], **{k: r[k] for k in TRACE_KEYS}}
                      for r in history if all(k in r for k in TRACE_KEYS)]

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        id_mass, id_nll = flow_scores(self.flow, self.id_images)
        ood_mass, ood_nll = flow_scores(self.flow, self.ood_images)
        values = {
            "trace_mass_id": float(np.mean(id_mass)),
            "trace_mass_ood": float(np.mean(ood_mass)),
            "trace_nll_id": float(np.mean(id_nll)),
            "trace_nll_ood": float(np.mean(ood_nll)),
            "trace_auroc_mass": _auroc(id_mass, ood_mass),
            "trace_auroc_nll": _auroc(id_nll, ood_nll),
        }
        logs.update(values)
        self.trace.append({"epoch": epoch + 1, **values})
        if self.run_dir is not None:
            from keras_tie.evaluation.figures import mass_trace_figure

            atomic_write_bytes(os.path.join(self.run_dir, TRACE_FIGURE),
                               mass_trace_figure(self.trace, id_mass, ood_mass, self.id_name,
                                                 self.ood_name))


def _auroc(id_scores, ood_scores):
    finite = np.isfinite(id_scores).all() and np.isfinite(ood_scores).all()
    return metrics.auroc(id_scores, ood_scores) if finite else float("nan")

