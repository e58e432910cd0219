"""One `fit` step of the TIE, flow and repair models on a fixed batch, under a given strategy.

Run by tests/test_distribute.py in a fresh process, because the CPU can only
be split into logical devices before TensorFlow initialises them:

    python tests/distributed_steps.py --replicas 2 --output steps.npz

writes, per model, the step's logs and the weights after it. `--replicas 1`
uses the default strategy; `--replicas N` a MirroredStrategy over N logical
CPU devices. The models, data and seeds are the same either way, so the
outputs must agree. Plain SGD, so that a weight's change is its gradient
(Adam's first step, lr * g / (|g| + eps), turns round-off in gradients near
zero into visible differences).
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_tie._backend import ensure_tensorflow_backend  # noqa: E402

ensure_tensorflow_backend()

from keras_tie.training.distribute import make_strategy  # noqa: E402

BATCH = 8  # the global batch; 4 images per replica with 2 replicas


def tie_step(strategy, outputs):
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_tie.models import build_classifier, build_generator
    from keras_tie.methods.tie.pool import GarbagePool
    from keras_tie.methods.tie.model import TIEModel

    shape = (28, 28, 1)
    with strategy.scope():
        keras.utils.set_random_seed(0)
        classifier = build_classifier(shape, 4, "conv3", width=4, dense_units=8)
        generator = build_generator(shape, 4, latent_dim=4, width=8)
        pool = GarbagePool(shape, 16)
        pool.fill_with_noise(16, [0.5], [0.5], np.random.default_rng(0))
        model = TIEModel(classifier, pool, generator, garbage_per_batch=4,
                         generator_batch_size=6, generator_interval=1, seed=3)
        model.compile(keras.optimizers.SGD(0.1), keras.optimizers.SGD(0.1))
        model.class_weights.assign([1.0, 2.0, 0.5, 1.5])  # weights that matter in the mean
    rng = np.random.default_rng(1)
    x = rng.random((BATCH, *shape)).astype(np.float32)
    y = (np.arange(BATCH) % 3).astype(np.int32)
    logs = model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH), epochs=1,
                     verbose=0, shuffle=False).history
    _record(outputs, "tie", logs, classifier.weights + generator.weights)


def flow_step(strategy, outputs, alpha):
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_tie.methods.flow.realnvp import RealNVP
    from keras_tie.methods.flow.model import FlowModel

    with strategy.scope():
        keras.utils.set_random_seed(0)
        flow = RealNVP((4, 4, 1), scales=1, blocks=1, width=4)
        model = FlowModel(flow, alpha=alpha, seed=5)
        model.compile(keras.optimizers.SGD(0.05))
    x = np.random.default_rng(2).integers(0, 256, (BATCH, 4, 4, 1)).astype(np.float32) / 255
    logs = model.fit(tf.data.Dataset.from_tensor_slices(x).batch(BATCH), epochs=1, verbose=0,
                     shuffle=False).history
    _record(outputs, f"flow_alpha{alpha:g}", logs, flow.weights)


def repair_step(strategy, outputs):
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_tie.models import build_classifier
    from keras_tie.methods.repair.unet import build_repair_unet
    from keras_tie.methods.repair.perceptual import PerceptualDistance
    from keras_tie.methods.repair.model import RepairModel

    with strategy.scope():
        keras.utils.set_random_seed(0)
        perception = build_classifier((28, 28, 1), 3, "conv3", width=4, dense_units=8)
        network = build_repair_unet((28, 28, 1), width=4, depth=2)
        model = RepairModel(network, ["down2", "down4", "box8x8+0+0"],
                            PerceptualDistance.from_network(perception), seed=7)
        model.compile(keras.optimizers.SGD(0.05))
    x = np.random.default_rng(3).random((BATCH, 28, 28, 1)).astype(np.float32)
    logs = model.fit(tf.data.Dataset.from_tensor_slices(x).batch(BATCH), epochs=1, verbose=0,
                     shuffle=False).history
    _record(outputs, "repair", logs, network.weights)


def _record(outputs, name, history, weights):
    import numpy as np

    for key, values in history.items():
        outputs[f"{name}/log/{key}"] = np.asarray(values[-1], np.float64)
    for i, weight in enumerate(weights):
        outputs[f"{name}/weight/{i:03d}_{weight.path}"] = np.asarray(weight.numpy())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    if args.replicas > 1:
        strategy = make_strategy("mirrored", cpu_devices=args.replicas)
    else:
        strategy = make_strategy("default")
    assert strategy.num_replicas_in_sync == args.replicas, strategy.num_replicas_in_sync
    import numpy as np

    outputs = {}
    tie_step(strategy, outputs)
    # alpha 2 (the nested-tape penalty); the alpha = 0 path differs only in taking the
    # global count by the same helper, and tracing a second flow costs ~15 s here.
    flow_step(strategy, outputs, alpha=2.0)
    repair_step(strategy, outputs)
    np.savez(args.output, **outputs)


if __name__ == "__main__":
    main()
