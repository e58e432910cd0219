"""The run folder (keras_tie.run_folder): one reader and writer, and old folders still load."""

import json
import os
import pathlib
import shutil

import numpy as np
import pytest

from keras_tie import methods, run_folder
from keras_tie.config import METHODS

OLD_RUNS = pathlib.Path(__file__).parent / "fixtures" / "runs_0_layout"


def test_every_method_has_a_recipe_and_unknown_names_are_refused():
    for name in METHODS:
        recipe = methods.recipe(name)
        assert all(callable(getattr(recipe, step)) for step in ("record", "build", "finish"))
    with pytest.raises(ValueError, match="Unknown method.*'gan'"):
        methods.recipe("gan")


def test_records_are_read_with_errors_that_say_what_is_wrong(tmp_path):
    with pytest.raises(run_folder.RunFolderError, match="Run folder not found"):
        run_folder.read_record(tmp_path / "missing")
    with pytest.raises(run_folder.RunFolderError, match="has no run.json"):
        run_folder.read_record(tmp_path)
    (tmp_path / "run.json").write_text("{\"dataset\": ")
    with pytest.raises(run_folder.RunFolderError, match="Cannot read"):
        run_folder.read_record(tmp_path)
    run_folder.write_record(tmp_path, {"dataset": "digits", "status": "failed",
                                       "failure": "the loss became non-finite"})
    assert not [f for f in os.listdir(tmp_path) if f != "run.json"]  # written atomically
    with pytest.raises(run_folder.RunFolderError, match="lacks num_classes, image_shape"):
        run_folder.read_record(tmp_path, run_folder.CLASSIFIER_KEYS)
    record = run_folder.read_record(tmp_path)
    with pytest.raises(run_folder.RunFolderError, match="failed run, which is not exported: "
                                                       "the loss became non-finite"):
        run_folder.check_finished(tmp_path, record, "exported")
    record["status"] = "running"
    with pytest.raises(run_folder.RunFolderError, match="has no model.keras.*--resume"):
        run_folder.check_finished(tmp_path, record, "evaluated")


def test_validation_split_is_a_seeded_partition():
    train, held = run_folder.validation_split_indices(1000, 0.1, seed=3)
    assert len(held) == 100 and len(train) == 900
    assert np.array_equal(np.sort(np.concatenate([train, held])), np.arange(1000))
    again = run_folder.validation_split_indices(1000, 0.1, seed=3)
    assert np.array_equal(held, again[1])
    assert not np.array_equal(held, run_folder.validation_split_indices(1000, 0.1, seed=4)[1])


def test_a_classifier_file_names_no_keras_tie_class_and_a_flow_file_its_own():
    assert run_folder.custom_objects(OLD_RUNS / "digits_tie" / "model.keras") == {}
    names = run_folder.custom_objects(OLD_RUNS / "digits_flow" / "model.keras")
    assert sorted(names) == ["keras_tie>RealNVP"]  # it builds its CouplingNets itself
    assert names["keras_tie>RealNVP"].__module__ == "keras_tie.methods.flow.realnvp"


def test_save_model_leaves_no_temporary_file(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = str(tmp_path / "model.keras")
    run_folder.save_model(model, path)
    assert os.listdir(tmp_path) == ["model.keras"]
    np.testing.assert_allclose(run_folder.load_model(path).get_weights()[0],
                               model.get_weights()[0])


def test_a_damaged_model_file_is_named(tmp_path):
    shutil.copytree(OLD_RUNS / "digits_tie", tmp_path / "run")
    model_file = tmp_path / "run" / "model.keras"
    model_file.write_bytes(model_file.read_bytes()[:500])
    with pytest.raises(run_folder.RunFolderError, match="model.keras: it is not a readable"):
        run_folder.load_run(tmp_path / "run")


def test_runs_written_before_the_methods_layout_still_evaluate_and_export(tmp_path):
    """run.json + model.keras of runs trained by the code before keras_tie/methods/ existed
    (tests/fixtures/runs_0_layout/README.md): evaluation reads both, export ships the
    classifier with the same labels as the Keras model and refuses the flow, saying why."""
    from keras_tie.data import load
    from keras_tie.detectors import get_detector
    from keras_tie.evaluation import load_run
    from keras_tie.export import ExportedModel, ExportError, export_run
    from keras_tie.inference import predict_probabilities, two_level_decision

    old = json.loads((OLD_RUNS / "digits_tie" / "run.json").read_text())
    assert old["validation"]["rule"] == "keras_tie.training.runner.validation_split_indices"

    tie = load_run(str(OLD_RUNS / "digits_tie"))
    assert (tie.method, tie.num_outputs, tie.garbage_index) == ("tie", 11, 10)
    images = load("digits", split="test", limit=64).images
    scores = get_detector("energy", tie.model).score(images)
    assert scores.shape == (64,) and np.all(np.isfinite(scores))

    flow = load_run(str(OLD_RUNS / "digits_flow"))
    assert flow.is_flow and type(flow.model).__name__ == "RealNVP"
    log_p = flow.model(images[:4].astype(np.float32) / 255.0)
    assert np.all(np.isfinite(np.asarray(log_p)))

    result = export_run(str(OLD_RUNS / "digits_tie"), str(tmp_path / "exported"))
    outputs = ExportedModel(result.path).predict(images.astype(np.float32))
    labels, _ = two_level_decision(predict_probabilities(tie.model, images), tie.tau)
    assert np.array_equal(outputs["label"], labels)
    with pytest.raises(ExportError, match="flow run, which keras-tie does not export"):
        export_run(str(OLD_RUNS / "digits_flow"), str(tmp_path / "flow_export"))


def test_method_detectors_are_registered_under_their_method_s_score_names():
    from keras_tie.detectors import FLOW_SCORES, FlowDetector, RepairDistance, detector_names
    from keras_tie.detectors.registry import METHOD_DETECTORS

    assert set(FLOW_SCORES) | {"repair"} == set(METHOD_DETECTORS)
    assert set(METHOD_DETECTORS) <= set(detector_names())
    assert FlowDetector.__module__ == "keras_tie.methods.flow.detector"
    assert RepairDistance.__module__ == "keras_tie.methods.repair.detector"


def test_a_new_run_whose_method_cannot_be_built_leaves_no_folder(tmp_path):
    from keras_tie.config import Config, ConfigError
    from keras_tie.training.runner import train

    config = Config.from_dict({"dataset": "digits", "method": "flow", "epochs": 1,
                               "flow": {"trace_ood": "digits"}})
    with pytest.raises(ConfigError, match="flow.trace_ood is the training set itself"):
        train(config, str(tmp_path / "run"), verbose=0)
    assert not (tmp_path / "run").exists()  # the same --output can be used again


def test_export_refuses_a_repair_run_saying_why(tmp_path):
    from keras_tie.export import ExportError, export_run

    shutil.copytree(OLD_RUNS / "digits_tie", tmp_path / "run")
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    record["method"] = "repair"
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    with pytest.raises(ExportError, match="repair run, which keras-tie does not export"):
        export_run(str(tmp_path / "run"), str(tmp_path / "exported"))
