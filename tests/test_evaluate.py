"""`keras-tie evaluate` end to end on a tiny run trained on 256 real MNIST images."""

import json
import shutil

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from keras_tie import metrics
from keras_tie._io import write_json
from keras_tie.cli.main import cli
from keras_tie.config import Config
from keras_tie.data import load
from keras_tie.detectors import msp_score
from keras_tie.evaluation import evaluate, write_report
from keras_tie.inference import predict_logits
from keras_tie.models import build_classifier
from keras_tie.training.runner import train

ALL_SCORES = {"ue", "ue@n+1", "garbage", "msp", "msp@n+1", "odin", "odin@n+1", "energy",
              "energy@n+1", "mahalanobis", "mahalanobis++", "entropy", "entropy@n+1"}


@pytest.fixture(scope="module")
def tie_run(tmp_path_factory, shared_data_dir):
    """A TIE run of one epoch on 256 MNIST images (no validation split)."""
    run_dir = tmp_path_factory.mktemp("runs") / "mnist_tie"
    config = Config.load(None, {"dataset": "mnist", "epochs": 1, "batch_size": 64, "limit": 256,
                                "data_dir": str(shared_data_dir), "tie.samples_per_class": 10,
                                "tie.generator_steps_per_epoch": 2,
                                "tie.initial_pool_size": 64, "tie.pool_capacity": 200})
    train(config, str(run_dir), verbose=0)
    return run_dir


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, shared_data_dir):
    """An untrained plain 10-class run folder with a 25% validation split, written by hand."""
    run_dir = tmp_path_factory.mktemp("runs") / "mnist_plain"
    run_dir.mkdir()
    keras.utils.set_random_seed(1)
    build_classifier((28, 28, 1), 10, width=4, dense_units=16).save(run_dir / "model.keras")
    write_json(run_dir / "run.json", {
        "method": "plain", "dataset": "mnist", "class_names": [str(i) for i in range(10)],
        "num_classes": 10, "num_outputs": 10, "garbage_index": None, "image_shape": [28, 28, 1],
        "tau": None, "status": "complete",
        "config": {"limit": 256, "seed": 0, "data_dir": str(shared_data_dir)},
        "validation": {"fraction": 0.25, "seed": 0}})
    return run_dir


@pytest.mark.slow
def test_cli_evaluate_end_to_end(tie_run, shared_data_dir, tmp_path):
    report = tmp_path / "report"
    result = CliRunner().invoke(cli, [
        "evaluate", str(tie_run), "--limit", "200", "--ood", "fashion_mnist,gaussian",
        "--report", str(report), "--data-dir", str(shared_data_dir), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Report:" in result.output

    data = json.loads((report / "metrics.json").read_text())
    for key in ("format", "convention", "settings", "id_set", "ood_sets", "runs", "level1",
                "level2", "notes", "figures"):
        assert key in data, key
    assert data["convention"]["score"] == "higher score = more likely OOD"
    assert data["convention"]["ood_label"] == -1
    assert data["convention"]["positive_class"]["fpr_at_95_tpr"] == "ID"
    assert data["convention"]["positive_class"]["aupr_out"] == "OOD"
    assert data["settings"]["seed"] == 0 and data["settings"]["limit"] == 200
    assert [s["name"] for s in data["ood_sets"]] == ["fashion_mnist", "gaussian"]
    run = data["runs"][0]
    assert run["method"] == "tie" and run["garbage_index"] == 10
    assert run["heldout"]["source"] == "id_test_half" and run["heldout"]["count"] == 100

    everything = [r for r in data["level2"] if r["subset"] == "all"]
    assert {r["score"] for r in everything} == ALL_SCORES
    assert len(everything) == len(ALL_SCORES) * 2
    for record in everything:
        assert record["sign"] == "higher score = more likely OOD"
        assert record["positive_class"]["auroc"] == "ID"
        assert record["id_count"] == 200 and record["ood_count"] == 200
        assert record["variant"] in ("n", "n+1", "features")
        for name in metrics.METRIC_NAMES:
            assert 0.0 <= record[name] <= 1.0, (record["score"], name)
        assert record["threshold"]["heldout"] == "id_test_half"
        assert record["threshold"]["id_count"] == 100
    variants = {r["score"]: r["variant"] for r in everything}
    assert variants["msp"] == "n" and variants["msp@n+1"] == "n+1"
    assert variants["mahalanobis"] == "features"
    assert any(r["subset"] == "not_garbage" for r in data["level2"])

    # The numbers match a direct computation on the same images.
    model = keras.saving.load_model(tie_run / "model.keras")
    test = load("mnist", "test", data_dir=str(shared_data_dir), limit=200)
    noise = load("gaussian", "test", like=(28, 28, 1), count=200, seed=0)
    id_logits, noise_logits = predict_logits(model, test.images), predict_logits(model,
                                                                                 noise.images)
    level1 = {r["set"]: r for r in data["level1"]}
    assert level1["mnist"]["accuracy_all_outputs"] == pytest.approx(
        np.mean(id_logits.argmax(1) == test.labels))
    assert level1["mnist"]["accuracy_id_outputs"] == pytest.approx(
        np.mean(id_logits[:, :10].argmax(1) == test.labels))
    assert level1["gaussian"]["sent_to_garbage"] == pytest.approx(
        np.mean(noise_logits.argmax(1) == 10))
    msp = next(r for r in everything if r["score"] == "msp" and r["ood_set"] == "gaussian")
    assert msp["auroc"] == pytest.approx(metrics.auroc(msp_score(id_logits[:, :10]),
                                                       msp_score(noise_logits[:, :10])), abs=1e-6)

    text = (report / "report.md").read_text()
    for phrase in ("higher score = more likely OOD", "positive class", "`msp@n+1`",
                   "FPR@95%TPR", "Level 1", "random half of ID test"):
        assert phrase in text, phrase
    names = [f["file"] for f in data["figures"]]
    assert len(names) == 2 + len(ALL_SCORES) + 2  # ROC/PR per set, histogram per score, heatmaps
    assert "level1_matrix.png" in names and "roc_pr_mnist_tie_gaussian.png" in names
    for name in names:
        content = (report / name).read_bytes()
        assert content[:8] == b"\x89PNG\r\n\x1a\n" and len(content) > 10_000, name
        assert f"]({name})" in text


@pytest.mark.slow
def test_runs_side_by_side_on_the_same_images(tie_run, plain_run, shared_data_dir, tmp_path):
    evaluation = evaluate([str(tie_run), str(plain_run)], ["gaussian"],
                          ["msp", "garbage", "mahalanobis"], limit=100, balance=True, seed=3,
                          data_dir=str(shared_data_dir), verbose=0)
    runs = {r["label"]: r for r in evaluation.runs}
    assert set(runs) == {"mnist_tie", "mnist_plain"}
    assert list(runs["mnist_plain"]["detectors"]) == ["msp", "mahalanobis"]
    assert list(runs["mnist_tie"]["detectors"]) == ["msp", "msp@n+1", "garbage", "mahalanobis"]
    assert any("mnist_plain: garbage skipped" in note for note in evaluation.notes)
    # The plain run's thresholds come from its validation split (64 of 256 training images).
    assert runs["mnist_plain"]["heldout"] == {
        "source": "validation", "count": 64, "fraction": 0.25, "seed": 0,
        "id_rates_on": "mnist test, all 100 images"}
    assert runs["mnist_plain"]["fit"]["images"] == 100  # 192 training images, limited to 100
    assert runs["mnist_tie"]["heldout"]["source"] == "id_test_half"

    plain_level1 = [r for r in evaluation.level1 if r["run"] == "mnist_plain"]
    assert "sent_to_garbage" not in plain_level1[0] and "accuracy_all_outputs" in plain_level1[0]
    records = evaluation.level2
    assert {(r["run"], r["score"]) for r in records if r["subset"] == "all"} == {
        ("mnist_tie", "msp"), ("mnist_tie", "msp@n+1"), ("mnist_tie", "garbage"),
        ("mnist_tie", "mahalanobis"), ("mnist_plain", "msp"), ("mnist_plain", "mahalanobis")}
    for record in records:
        assert record["balanced"] and record["balance_seed"] == 3
        if record["id_count"]:
            assert record["id_count"] == record["ood_count"]  # balanced, subsets included
    # Both runs were scored on the very same images.
    assert all(len(evaluation.scores[run]["msp"]["gaussian"]) == 100 for run in runs)

    paths = write_report(evaluation, tmp_path / "side_by_side", figures=False)
    text = open(paths["report"]).read()
    assert "| `msp` | mnist_tie |" in text and "| `msp` | mnist_plain |" in text
    assert "Paper protocol (section 6.3)" in text
    assert "validation split (64 images" in text
    data = json.loads(open(paths["metrics"]).read())
    assert data["figures"] == [] and data["settings"]["balance"] is True


def test_bad_input_is_refused_with_clear_errors(tie_run, plain_run, tmp_path, shared_data_dir):
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(cli, ["evaluate", *map(str, args), "--quiet",
                                     "--data-dir", str(shared_data_dir)])
        assert result.exit_code != 0
        return result.output

    report = tmp_path / "r"
    output = run(tie_run, "--scores", "msp,msq", "--report", report)
    assert "Unknown score(s): msq" in output and "Available:" in output and "mahalanobis" in output
    assert "svhm" in run(tie_run, "--ood", "svhm", "--scores", "msp", "--report", report)
    assert "in-distribution dataset" in run(tie_run, "--ood", "mnist", "--report", report)
    assert "Bad parameters for score 'odin'" in run(
        tie_run, "--scores", "odin", "--param", "odin.tmperature=3", "--report", report)
    assert "None of the requested scores" in run(plain_run, "--scores", "garbage",
                                                 "--report", report)
    assert "--report DIR is needed" in run(tie_run, plain_run)

    empty = tmp_path / "empty"
    empty.mkdir()
    assert "has no run.json" in run(empty, "--report", report)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(plain_run / "run.json", unfinished / "run.json")
    assert "has no model.keras" in run(unfinished, "--report", report)
    other = tmp_path / "fashion"
    shutil.copytree(plain_run, other)
    info = json.loads((other / "run.json").read_text())
    write_json(other / "run.json", dict(info, dataset="fashion_mnist"))
    output = run(tie_run, other, "--report", report)
    assert "must share their in-distribution dataset" in output and "fashion_mnist" in output
    assert not report.exists()


@pytest.mark.slow
def test_an_ood_set_of_another_shape_is_converted_and_said_so(tie_run, shared_data_dir):
    evaluation = evaluate([str(tie_run)], ["cifar10"], ["msp"], limit=50,
                          data_dir=str(shared_data_dir), verbose=0)
    summary = evaluation.ood_sets[0]
    assert summary["converted_from"] == [32, 32, 3] and summary["converted_to"] == [28, 28, 1]
    assert any(note.startswith("cifar10: converted from 32x32x3 to 28x28x1")
               for note in evaluation.notes)
