import dataclasses
import json
import os

import keras
import numpy as np
import pytest
from harness import sample_batch
from PIL import Image
from runs import RUN_FILES
from tiny import CUSTOM_STEP_TASKS, TINY_KWARGS, tiny_architecture

import training
import zoo
from training.config import FitConfig
from zoo import ZooError

# A data set per task, for training every registered model.
DATASET_FOR_TASK = {
    "language_modeling": "arithmetic",
    "classification": "digits",
    "binary_classification": "blobs",
    "regression": "linear",
    "segmentation": "digits_segmentation",
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("run") / "mlp"
    result = training.fit("mlp", "digits", epochs=2, output_dir=str(output_dir), verbose=0)
    return result, output_dir


def test_fit_writes_a_complete_run(finished_run):
    result, output_dir = finished_run
    assert sorted(os.listdir(output_dir)) == RUN_FILES
    history = json.loads((output_dir / "history.json").read_text())
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(values) == 2 for values in history.values())
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics == result.metrics and set(metrics) == {"test_loss", "test_accuracy"}
    config = json.loads((output_dir / "config.json").read_text())
    assert config["backend"] == keras.backend.backend() and config["epochs"] == 2
    with Image.open(output_dir / "curves.png") as image:
        assert image.format == "PNG" and image.size[0] > image.size[1] > 100


def test_saved_model_evaluates_to_the_reported_metrics(finished_run):
    result, output_dir = finished_run
    metrics = training.evaluate(output_dir / "model.keras", "digits")
    assert metrics == pytest.approx(result.metrics, rel=1e-5)


def test_a_finished_run_is_not_overwritten(finished_run):
    _, output_dir = finished_run
    before = {name: (output_dir / name).read_bytes() for name in os.listdir(output_dir)}
    with pytest.raises(ZooError, match="holds a finished run.*--overwrite"):
        training.fit("mlp", "digits", epochs=1, output_dir=str(output_dir), verbose=0)
    assert {name: (output_dir / name).read_bytes() for name in os.listdir(output_dir)} == before


def test_overwrite_replaces_a_finished_run(tmp_path):
    first = training.fit("mlp", "digits", epochs=1, output_dir=str(tmp_path), verbose=0)
    second = training.fit(
        "mlp", "digits", epochs=1, seed=1, output_dir=str(tmp_path), overwrite=True, verbose=0
    )
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == second.metrics != first.metrics
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]


def test_unwritable_output_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ZooError, match="Expected a writable output dir"):
        training.fit("mlp", "digits", output_dir=str(blocker / "run"), verbose=0)


def test_same_seed_same_weights_other_seed_other_weights():
    def weights(seed):
        result = training.fit("simple_cnn", "digits", epochs=2, seed=seed, verbose=0)
        return result.model.get_weights(), result.history

    (a, history_a), (b, history_b), (c, _) = weights(3), weights(3), weights(4)
    assert history_a == history_b
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not all(np.array_equal(x, z) for x, z in zip(a, c, strict=True))


@pytest.mark.parametrize(
    "name",
    # Custom-step models: tests/zoo/test_custom_step_models.py. XLA takes
    # minutes to compile a ResNet's steps on 2 CPU cores, even a tiny one.
    [
        pytest.param(n, marks=pytest.mark.large) if "resnet" in n else n
        for n in zoo.list_models()
        if zoo.model_task(n) not in CUSTOM_STEP_TASKS
    ],
)
def test_every_model_trains_through_fit(name):
    """`fit` builds each model for its task's data, trains it and tests it.

    What is checked (the data, the objective and the loop fit together) does
    not depend on size: the models take their tiny architecture arguments
    (`fit` chooses input shapes, classes and vocabularies itself), and the data
    sets are cut to whole batches, which XLA compiles a step for once.
    """
    dataset = DATASET_FOR_TASK[zoo.model_task(name)]
    if "vocab_size" in zoo.model_arguments(name):  # token models
        dataset = "arithmetic" if zoo.model_task(name) == "language_modeling" else "sequence_order"
    model_kwargs = tiny_architecture(name)
    # digits are 8x8: ViT takes patches of 2x2.
    if "patch_size" in model_kwargs:
        model_kwargs["patch_size"] = 2
    data = _whole_batches(training.load_dataset(dataset), train=8, held_out=2)
    result = training.fit(name, data, epochs=3, model_kwargs=model_kwargs, verbose=0)
    losses = result.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert np.isfinite(list(result.metrics.values())).all()


def _whole_batches(data, *, train, held_out, batch_size=32):
    """`data` cut to `train` batches for training and `held_out` for
    validation and testing each."""
    cut = {"train": train * batch_size, "val": held_out * batch_size, "test": held_out * batch_size}
    arrays = {
        f"{xy}_{split}": getattr(data, f"{xy}_{split}")[:size]
        for split, size in cut.items()
        for xy in "xy"
    }
    assert all(len(a) % batch_size == 0 for a in arrays.values()), "too few samples"
    return dataclasses.replace(data, **arrays)


def test_mlp_with_dropout_trains_through_fit():
    result = training.fit(
        "mlp",
        "digits",
        epochs=5,
        model_kwargs={"dropout": 0.2, "hidden_units": (64, 64)},
        verbose=0,
    )
    assert result.metrics["test_accuracy"] > 0.9


def test_arrays_in_place_of_a_data_set():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + 2 * (x[:, 1] > 0)
    result = training.fit("mlp", (x, y), epochs=20, verbose=0)
    assert result.model.output_shape == (None, 4)
    assert result.metrics["test_accuracy"] > 0.8


def test_a_compiled_keras_model_is_trained_as_compiled():
    model = zoo.create_model("mlp", input_shape=(8, 8, 1))
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseTopKCategoricalAccuracy(k=3, name="top3")],
    )
    result = training.fit(model, "digits", epochs=1, verbose=0)
    assert result.model is model and "test_top3" in result.metrics


def test_tensorboard_writes_one_event_file_per_split_per_run(tmp_path):
    def event_files():
        return {
            split: [
                name
                for name in os.listdir(tmp_path / "tensorboard" / split)
                if name.startswith("events.out.tfevents")
            ]
            for split in ("train", "validation")
        }

    run = dict(output_dir=str(tmp_path), tensorboard=True, verbose=0)
    training.fit("mlp", "digits", epochs=2, **run)
    first = event_files()
    assert all(len(names) == 1 for names in first.values()), first
    # A run replacing a finished one clears its logs. The finished run's files
    # are renamed: two runs in one second may write files of the same name.
    for split, (name,) in first.items():
        os.rename(
            tmp_path / "tensorboard" / split / name,
            tmp_path / "tensorboard" / split / f"{name}.old",
        )
    training.fit("mlp", "digits", epochs=1, overwrite=True, **run)
    second = event_files()
    assert all(len(names) == 1 and not names[0].endswith(".old") for names in second.values()), (
        second
    )


@pytest.mark.parametrize(
    "model, dataset, options, message",
    [
        (
            "linear_regressor",
            "digits",
            {},
            "is for regression and expects float targets. "
            "Received: data set 'digits' with 10 classes",
        ),
        ("logistic_regressor", "digits", {}, "expects labels 0 and 1"),
        ("simple_cnn", "linear", {}, "expects integer class labels"),
        ("mlp", "digits", {"batch_size": 5000}, "batch_size at most the 1258 training samples"),
        ("mlp", "digits", {"epochs": 0}, "epochs to be a positive int. Received: epochs=0"),
        ("mlp", "digits", {"epochs": -3}, "Received: epochs=-3"),
        (
            "mlp",
            "digits",
            {"optimizer": "adamm"},
            "Unknown optimizer 'adamm'. Expected one of: .*adam",
        ),
        ("mlp", "digits", {"learning_rate": 0}, "learning_rate to be a number > 0"),
        ("mlp", "digits", {"epoch": 3}, "Received unknown: epoch"),
        ("mlp", "mnistt", {}, "Unknown data set 'mnistt'"),
        ("mlpp", "digits", {}, "Unknown model 'mlpp'. Did you mean 'mlp'"),
        ("mlp", {"x": 1}, {}, "Received: dataset of type dict"),
        (
            "mlp",
            (np.zeros((20, 3)), np.array(["cat", "dog"] * 10)),
            {},
            r"Expected numeric targets.* Received: arrays targets of dtype <U3",
        ),
        ("mlp", "digits", {"image_size": 0}, "image_size to be a positive int"),
        (
            zoo.create_model("mlp", input_shape=(28, 28, 1)),
            "digits",
            {},
            r"expects inputs of shape \(28, 28, 1\). "
            r"Received: digits with inputs of shape \(8, 8, 1\)",
        ),
    ],
)
def test_bad_input_fails_in_one_line(model, dataset, options, message, tmp_path):
    with pytest.raises(ZooError, match=message) as error:
        training.fit(model, dataset, verbose=0, output_dir=str(tmp_path / "run"), **options)
    assert "\n" not in str(error.value)
    assert not os.listdir(tmp_path)  # nothing written, not even the output dir


def test_fit_config_is_a_typed_object():
    config = FitConfig(epochs=3)
    assert config.to_dict()["epochs"] == 3
    assert float(config.make_optimizer().learning_rate) == pytest.approx(5e-3, rel=1e-6)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "vit_tiny", "unet_small"])
def test_freeze_backbone_trains_only_the_head(name):
    kwargs = TINY_KWARGS[name]
    model = zoo.create_model(name, **kwargs)
    x, y = sample_batch(kwargs["input_shape"], zoo.model_task(name), kwargs["num_classes"])
    before = {v.path: np.array(v) for v in model.weights}

    training.fit(
        model,
        (np.concatenate([x] * 8), np.concatenate([y] * 8)),
        epochs=2,
        batch_size=8,
        freeze_backbone=True,
        verbose=0,
    )

    head = model.layers[-1] if model.layers[-1].weights else model.layers[-2]
    for variable in model.weights:
        unchanged = np.array_equal(np.array(variable), before[variable.path])
        # Only the head moves; frozen BatchNorm statistics stay too.
        assert unchanged != variable.path.startswith(head.name + "/"), variable.path


def test_freeze_backbone_needs_a_head():
    headless = zoo.create_model(
        "resnet18", input_shape=(8, 8, 1), stem="small", include_top=False, pooling="avg"
    )
    with pytest.raises(ZooError, match="head to freeze the backbone of.*BatchNormalization$"):
        training.fit(headless, "digits", freeze_backbone=True)


def test_predict_refuses_non_numeric_inputs(finished_run):
    _, output_dir = finished_run
    with pytest.raises(ZooError, match="Expected numeric inputs. Received: inputs of dtype <U1"):
        training.predict(output_dir / "model.keras", np.full((2, 8, 8, 1), "a"))
