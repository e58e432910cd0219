"""The approximate-mass flow: bijectors, RealNVP, the penalty, scores, config, CLI end to end.

Bijector tests follow TFP's own (real_nvp_test.py): inverse(forward(x)) == x,
ildj == -fldj, and the log-determinant against log|det J| of an autodiff
Jacobian, on tiny shapes (4x4x1, 8x8x2) and tiny networks.
"""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from keras_tie.methods.flow.approximate_mass import (
    bin_midpoint,
    bits_per_dim,
    dequantize,
    flow_scores,
    log_prob_and_mass,
    nll_nats,
)
from keras_tie.cli.main import cli
from keras_tie.config import Config, ConfigError, preset_path
from keras_tie.detectors import get_detector
from keras_tie.methods.flow.coupling_net import CouplingNet
from keras_tie.methods.flow.bijectors import (
    ChannelCoupling,
    CheckerboardCoupling,
    FactorOut,
    LogitTransform,
    Squeeze,
)
from keras_tie.methods.flow.realnvp import RealNVP
from keras_tie.methods.flow.model import FlowModel

EVENT = 3


def randomized(layer_or_model, seed, scale=0.05):
    """Every weight moved off its initial value, so no coupling is the identity."""
    rng = np.random.default_rng(seed)
    for variable in layer_or_model.weights:
        variable.assign(variable.numpy() + scale * rng.standard_normal(variable.shape)
                        .astype(np.float32))
    return layer_or_model


def tiny_net(in_channels, out_channels, seed=0):
    net = CouplingNet(out_channels, width=4, blocks=1)
    net.build((None, None, None, in_channels))
    return randomized(net, seed)


def tiny_flow(shape=(4, 4, 1), scales=2, seed=0):
    keras.utils.set_random_seed(seed)
    return randomized(RealNVP(shape, scales=scales, blocks=1, width=4), seed)


def images(shape, count=3, seed=0):
    return tf.constant(np.random.default_rng(seed).uniform(0.02, 0.98, (count, *shape)),
                       tf.float32)


def log_abs_det_jacobian(fn, x):
    """log|det d fn(x) / dx| per sample, from a reverse-mode autodiff Jacobian.

    Each sample is repeated D times and row j of the gradient of
    sum_j fn(x_j)[j] is row j of the Jacobian (the copies are independent):
    the whole Jacobian from one batched backward pass, where batch_jacobian
    would vectorise D of them.
    """
    dims = int(np.prod(x.shape[1:]))
    result = []
    for sample in tf.unstack(x):
        copies = tf.repeat(sample[None], dims, axis=0)
        with tf.GradientTape() as tape:
            tape.watch(copies)
            out = tf.reshape(fn(copies), [dims, dims])
            diagonal = tf.reduce_sum(out * tf.eye(dims))
        jacobian = tf.reshape(tape.gradient(diagonal, copies), [dims, dims])
        result.append(float(tf.linalg.slogdet(tf.cast(jacobian, tf.float64))[1]))
    return np.array(result)


# Each case: (name, factory of the bijector, input shape in the forward direction).
# Inverses are taken of tf.identity(y), a new tensor, so that TFP's cache cannot answer
# inverse(forward(x)) with the x it was given.
CASES = [
    ("logit", lambda: LogitTransform(0.05), (4, 4, 1)),
    ("squeeze", Squeeze, (4, 4, 2)),
    ("checkerboard_0", lambda: CheckerboardCoupling(tiny_net(3, 2, 1), parity=0), (4, 4, 2)),
    ("checkerboard_1", lambda: CheckerboardCoupling(tiny_net(3, 2, 2), parity=1), (4, 4, 2)),
    ("channel", lambda: ChannelCoupling(tiny_net(2, 2, 3), reverse=False), (4, 4, 4)),
    ("channel_reverse", lambda: ChannelCoupling(tiny_net(2, 2, 4), reverse=True), (4, 4, 4)),
    ("factor_out", lambda: FactorOut(CheckerboardCoupling(tiny_net(3, 2, 5)), keep=2),
     (4, 4, 4)),
]


@pytest.mark.parametrize("name,make,shape", CASES, ids=[c[0] for c in CASES])
def test_bijector_inverts_and_its_log_det_is_the_jacobians(name, make, shape):
    bijector = make()
    x = images(shape, seed=len(name))
    if name == "logit":  # forward maps logits to pixels: start from logits
        x = tf.constant(np.random.default_rng(0).normal(0, 2, (3, *shape)), tf.float32)
    y = bijector.forward(x)
    assert y.shape == bijector.forward_event_shape(x.shape)
    x_back = bijector.inverse(tf.identity(y))
    np.testing.assert_allclose(x_back, x, rtol=1e-5, atol=1e-5)

    fldj = bijector.forward_log_det_jacobian(x, event_ndims=EVENT).numpy()
    ildj = bijector.inverse_log_det_jacobian(tf.identity(y), event_ndims=EVENT).numpy()
    np.testing.assert_allclose(ildj, -np.broadcast_to(fldj, ildj.shape), rtol=1e-5, atol=1e-4)
    expected = log_abs_det_jacobian(bijector.forward, x)
    np.testing.assert_allclose(np.broadcast_to(fldj, expected.shape), expected, rtol=1e-4,
                               atol=1e-3)
    if name.startswith(("checkerboard", "channel")):
        assert np.all(np.abs(fldj) > 1e-3)  # the randomized nets really scale


def test_checkerboard_keeps_the_conditioning_squares():
    x = images((4, 4, 1))
    y = CheckerboardCoupling(tiny_net(2, 1), parity=0).forward(x).numpy()
    rows, columns = np.indices((4, 4))
    kept = (rows + columns) % 2 == 0
    np.testing.assert_array_equal(y[:, kept], x.numpy()[:, kept])
    assert not np.allclose(y[:, ~kept], x.numpy()[:, ~kept])


@pytest.mark.parametrize("shape,scales", [((4, 4, 1), 2), ((8, 8, 2), 3)])
def test_realnvp_chain_inverts_and_log_prob_is_change_of_variables(shape, scales):
    flow = tiny_flow(shape, scales)
    x = images(shape, count=2)
    z = flow.bijector().inverse(x)
    assert z.shape == x.shape  # the multi-scale chain keeps the shape (factored-out halves)
    np.testing.assert_allclose(flow.bijector().forward(tf.identity(z)), x, atol=1e-4)
    ildj = flow.bijector().inverse_log_det_jacobian(x, event_ndims=EVENT).numpy()
    np.testing.assert_allclose(ildj, log_abs_det_jacobian(flow.bijector().inverse, x),
                               rtol=1e-4, atol=1e-2)
    fldj = flow.bijector().forward_log_det_jacobian(tf.identity(z), event_ndims=EVENT).numpy()
    np.testing.assert_allclose(fldj, -ildj, rtol=1e-4, atol=1e-2)
    base = -0.5 * np.sum(z.numpy() ** 2, axis=(1, 2, 3)) - 0.5 * np.prod(shape) * np.log(
        2 * np.pi)
    log_prob = flow(x).numpy()
    np.testing.assert_allclose(log_prob, base + ildj, rtol=1e-5, atol=1e-2)
    assert np.all(np.isfinite(log_prob))
    if scales == 2:
        sample = flow.sample(2, seed=1)
        assert sample.shape == (2, *shape) and np.all(np.isfinite(flow(sample)))


def test_realnvp_has_the_papers_sizes_and_refuses_bad_shapes():
    # 004_f7d5548531a0fef9.txt, section 4.2: ~10 M parameters for 4 blocks / 2 scales on 28x28x1.
    assert 8e6 < RealNVP((28, 28, 1), scales=2, blocks=4, width=64).count_params() < 12e6
    with pytest.raises(ValueError, match="multiples of 4"):
        RealNVP((28, 30, 1), scales=3)
    with pytest.raises(ValueError, match="boundary"):
        RealNVP((4, 4, 1), boundary=0.5)


def test_nats_and_bits_per_dim():
    # A uniform density on [0, 1]^D (log p = 0) is 8 bits per dimension.
    nll = nll_nats(tf.constant([0.0]), 784)
    assert float(nll[0]) == pytest.approx(784 * np.log(256))
    assert float(bits_per_dim(nll, 784)[0]) == pytest.approx(8.0)
    np.testing.assert_allclose(bin_midpoint(tf.constant([0.0, 1.0, 2.0, -1.0])),
                               [0.5 / 256, 255.5 / 256, 255.5 / 256, 0.5 / 256])


def test_penalty_is_finite_differentiable_and_per_sample():
    flow = tiny_flow()
    x = images((4, 4, 1), count=4, seed=3)
    with tf.GradientTape() as tape:
        log_prob, mass = log_prob_and_mass(flow, x)
        penalty = tf.reduce_mean(mass)
    gradients = tape.gradient(penalty, flow.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g)) for g in gradients)
    assert any(np.abs(g).max() > 0 for g in gradients)
    assert np.all(np.isfinite(log_prob)) and np.all(mass.numpy() > 0)

    # The same tensor again: TFP's bijector cache must not hand back tensors recorded on the
    # first tape (the gradient through them would be lost and the mass come out wrong).
    np.testing.assert_allclose(log_prob_and_mass(flow, x)[1], mass, rtol=1e-6)

    alone = [log_prob_and_mass(flow, x[i:i + 1]) for i in range(4)]
    np.testing.assert_allclose(mass, [float(m[0]) for _, m in alone], rtol=1e-5)
    assert float(penalty) == pytest.approx(np.mean([float(m[0]) for _, m in alone]), rel=1e-5)
    # The mass is the norm of the gradient of log p, checked by finite differences.
    direction = tf.constant(np.random.default_rng(0).normal(size=(1, 4, 4, 1)), tf.float32)
    with tf.GradientTape() as tape:
        point = x[:1]
        tape.watch(point)
        value = tf.reduce_sum(flow(point))
    gradient = tape.gradient(value, point)
    assert float(tf.norm(gradient)) == pytest.approx(float(mass[0]), rel=1e-5)
    h = 1e-3
    numeric = (float(flow(point + h * direction)[0]) - float(flow(point - h * direction)[0])) / (
        2 * h)
    assert numeric == pytest.approx(float(tf.reduce_sum(gradient * direction)), rel=2e-2,
                                    abs=0.5)


@pytest.mark.parametrize("alpha", [0.0, 2.0])
def test_train_steps_lower_the_loss_on_a_fixed_batch(alpha):
    flow = tiny_flow(seed=1)
    model = FlowModel(flow, alpha=alpha, seed=0)
    model.compile(keras.optimizers.Adam(5e-3))
    model.optimizer.build(flow.trainable_variables)
    batch = images((4, 4, 1), count=16, seed=5)

    def objective():
        log_prob, mass = log_prob_and_mass(flow, bin_midpoint(batch))
        return float(tf.reduce_mean(nll_nats(log_prob, 16)) + alpha * tf.reduce_mean(mass))

    before = objective()
    for _ in range(4):
        logs = model.train_step(batch)
    assert set(logs) == {"loss", "nll", "bits_per_dim", "mass"}
    assert all(np.isfinite(float(v)) for v in logs.values())
    assert objective() < before - 0.5
    if alpha == 0:
        assert float(logs["loss"]) == pytest.approx(float(logs["nll"]))


def test_vanilla_step_mass_matches_log_prob_and_mass():
    """alpha = 0 takes the input gradient from the weights' backward pass; same mass."""
    flow = tiny_flow(seed=2)
    model = FlowModel(flow, alpha=0.0, seed=0)
    model.compile(keras.optimizers.SGD(0.0))  # no update: the metrics describe this flow
    model.optimizer.build(flow.trainable_variables)
    x = images((4, 4, 1), count=4, seed=6)
    noise = model.training_noise(x)  # the step's noise: keyed by the optimizer step (0)
    logs = model.train_step(x)
    _, mass = log_prob_and_mass(flow, dequantize(x, noise=noise))
    assert float(logs["mass"]) == pytest.approx(float(tf.reduce_mean(mass)), rel=1e-4)


def test_save_and_reload_give_the_same_log_probs(tmp_path):
    flow = tiny_flow((8, 8, 2))
    path = tmp_path / "flow.keras"
    flow.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, RealNVP) and reloaded.get_config()["image_shape"] == [8, 8, 2]
    for count in (3, 5):  # a second batch size too
        x = images((8, 8, 2), count=count, seed=count)
        np.testing.assert_allclose(reloaded(x), flow(x), rtol=1e-6, atol=1e-4)


def test_flow_detectors_score_the_mass_and_the_nll():
    flow = tiny_flow()
    pixels = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 1)).astype(np.uint8)
    mass = get_detector("approximate_mass", flow).score(pixels, batch_size=2)
    nll = get_detector("nll", flow).score(pixels)
    log_prob, expected = log_prob_and_mass(flow, bin_midpoint(pixels.astype(np.float32) / 255))
    np.testing.assert_allclose(mass, expected, rtol=1e-5)
    np.testing.assert_allclose(nll, -log_prob.numpy() + 16 * np.log(256), rtol=1e-5)
    np.testing.assert_allclose(flow_scores(flow, pixels)[0], mass, rtol=1e-6)
    with pytest.raises(ValueError, match="needs a flow"):
        get_detector("approximate_mass", keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="no garbage class"):
        get_detector("nll", flow, garbage_index=10)


def test_flow_config_section_is_validated_and_presets_load():
    config = Config.load(None, {"method": "flow", "flow.alpha": 0})
    assert config.flow.alpha == 0.0 and config.flow.scales == 2
    with pytest.raises(ConfigError, match="flow.alpha"):
        Config.load(None, {"flow.alpha": -1.0})
    with pytest.raises(ConfigError, match="Did you mean 'flow.alpha'"):
        Config.load(None, {"flow.alpah": 2.0})
    with pytest.raises(ConfigError, match="flow.scales.*int"):
        Config.load(None, {"flow.scales": 1.5})
    with pytest.raises(ConfigError, match="flow.logit_boundary"):
        Config.load(None, {"flow.logit_boundary": 0.5})
    for dataset, blocks, scales in (("fashion_mnist", 4, 2), ("mnist", 4, 2), ("cifar10", 6, 3)):
        preset = Config.load(preset_path(f"flow_{dataset}"))
        assert (preset.method, preset.dataset, preset.flow.alpha) == ("flow", dataset, 2.0 / 64)
        assert (preset.flow.blocks, preset.flow.scales) == (blocks, scales)
    result = CliRunner().invoke(cli, ["train", "--method", "plain", "--alpha", "2"])
    assert result.exit_code != 0 and "--alpha" in result.output


@pytest.mark.slow
def test_cli_flow_train_resume_and_evaluate(tmp_path, shared_data_dir):
    run_dir = tmp_path / "flow_run"
    # One scale (four checkerboard couplings) of width 4: the plumbing, not the architecture.
    tiny = ["--set", "flow.scales=1", "--set", "flow.blocks=1", "--set", "flow.width=4",
            "--set", "flow.trace_images=32"]
    result = CliRunner().invoke(cli, [
        "train", "--method", "flow", "--dataset", "mnist", "--limit", "128", "--epochs", "1",
        "--batch-size", "32", "--alpha", "2", "--data-dir", str(shared_data_dir),
        "--output", str(run_dir), "--quiet", *tiny])
    assert result.exit_code == 0, result.output
    assert "test bits_per_dim" in result.output
    info = json.loads((run_dir / "run.json").read_text())
    assert info["method"] == "flow" and info["status"] == "complete"
    assert info["config"]["flow"]["alpha"] == 2.0 and info["config"]["flow"]["width"] == 4
    # --method flow --dataset mnist picked configs/flow_mnist.toml (its trace set)
    assert info["config"]["flow"]["trace_ood"] == "fashion_mnist"
    assert info["image_shape"] == [28, 28, 1] and info["garbage_index"] is None
    assert 0 < info["test_metrics"]["bits_per_dim"] < 12
    last = info["history"][-1]
    for key in ("loss", "nll", "bits_per_dim", "mass", "trace_mass_id", "trace_mass_ood",
                "trace_auroc_mass", "epoch_seconds"):
        assert np.isfinite(last[key]), key
    assert last["bits_per_dim"] == pytest.approx(last["nll"] / (784 * np.log(2)), rel=1e-4)
    assert last["loss"] == pytest.approx(last["nll"] + 2 * last["mass"], rel=1e-4)
    assert (run_dir / "mass_trace.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "history.csv").read_text().count("\n") == 2

    result = CliRunner().invoke(cli, ["train", "--output", str(run_dir), "--resume",
                                      "--epochs", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    info = json.loads((run_dir / "run.json").read_text())
    assert [h["epoch"] for h in info["history"]] == [1, 2]
    assert (run_dir / "history.csv").read_text().count("\n") == 3

    result = CliRunner().invoke(cli, ["evaluate", str(run_dir), "--limit", "100", "--ood",
                                      "gaussian", "--data-dir", str(shared_data_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    data = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    records = {r["score"]: r for r in data["level2"]}
    assert set(records) == {"approximate_mass", "nll"}
    assert data["runs"][0]["method"] == "flow" and data["runs"][0]["num_outputs"] is None
    assert {r["set"] for r in data["level1"]} == {"mnist", "gaussian"}
    for record in records.values():
        assert record["id_count"] == 100 and record["ood_count"] == 100
        assert 0.0 <= record["auroc"] <= 1.0
    # Gaussian noise is far from any digit: the likelihood separates it even after 2 epochs.
    assert records["nll"]["auroc"] > 0.9
    assert "approximate_mass" in (run_dir / "evaluation" / "report.md").read_text()


def test_flow_runs_get_flow_scores_and_classifiers_the_others():
    from keras_tie.evaluation import scores_for_run

    names, notes = scores_for_run(["msp", "approximate_mass", "nll"], False, is_flow=True)
    assert names == ["approximate_mass", "nll"] and "msp skipped" in notes[0]
    names, notes = scores_for_run(["msp", "nll"], True, is_flow=False)
    assert names == ["msp", "msp@n+1"] and "nll skipped" in notes[0]
