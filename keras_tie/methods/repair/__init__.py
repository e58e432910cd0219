"""SR-OOD: OOD detection by sample repairing (003_f548187660c0ce3b.txt; docs/repair.md).

Erode an image (downsample it, black out a rectangle, or leave it: the
reconstruction ablation), repair it with a network trained on
in-distribution images only, and score by the distance between the image
and its repair. Higher = more OOD.

- `operators`: the operator names and the set of each variant (no TensorFlow);
- `erosion`: `ErosionSet`, the operators as vectorised TensorFlow ops;
- `distance`: `l2_distance`, the LPIPS-style `perceptual_distance`;
- `perceptual`: `PerceptualDistance` on a frozen in-distribution network;
- `selection`: choosing the test operator T* by AUROC.

The network is `keras_tie.methods.repair.unet.build_repair_unet`, the trained
model `keras_tie.methods.repair.model.RepairModel`, the score
`keras_tie.detectors.RepairDistance` (registry name `repair`).

Names are imported on first use, so importing this package (and so
validating a config) does not load TensorFlow.
"""

import importlib

_EXPORTS = {
    "IDENTITY": "operators", "VARIANTS": "operators", "parse_operator": "operators",
    "variant_operators": "operators", "ErosionSet": "erosion",
    "downsample_upsample": "erosion", "DISTANCES": "distance", "l2_distance": "distance",
    "layer_distance": "distance", "perceptual_distance": "distance",
    "PerceptualDistance": "perceptual", "default_layers": "perceptual",
    "load_perception_network": "perceptual", "select_operator": "selection",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_tie.methods.repair' has no attribute {name!r}")
    return getattr(importlib.import_module(f"keras_tie.methods.repair.{_EXPORTS[name]}"), name)
