"""What each seed model promises beyond the shared harness."""

import keras
import numpy as np
import pytest

import training
import zoo
from training.loop import compile_for_task


def test_linear_regressor_learns_y_equals_2x():
    training.seed_everything(0)
    model = zoo.create_model("linear_regressor")
    compile_for_task(model, "regression", keras.optimizers.SGD(learning_rate=0.01))
    x = np.arange(1, 6, dtype="float32").reshape(-1, 1)
    # 500 SGD steps on the batch of all five points, as 5 epochs of 100
    # batches rather than 500 epochs of one: Keras' cost is per epoch.
    x_repeated = np.tile(x, (100, 1))
    model.fit(x_repeated, 2 * x_repeated, batch_size=5, shuffle=False, epochs=5, verbose=0)
    prediction = model.predict(np.array([[10.0]], dtype="float32"), verbose=0)
    assert prediction[0, 0] == pytest.approx(20, abs=0.5)


def test_logistic_regressor_separates_blobs():
    result = training.fit("logistic_regressor", "blobs", verbose=0)
    assert result.model.layers[-1].get_config()["activation"] == "sigmoid"
    assert result.metrics["test_accuracy"] > 0.95


@pytest.mark.parametrize(
    "kwargs, parameters",
    [
        ({}, 784 * 128 + 128 + 128 * 10 + 10),  # 784-128-10
        ({"dropout": 0.2}, 784 * 128 + 128 + 128 * 10 + 10),  # TF MNIST quickstart
        ({"hidden_units": (512, 512)}, 784 * 512 + 512 + 512 * 512 + 512 + 512 * 10 + 10),
    ],
)
def test_mlp_variants(kwargs, parameters):
    model = zoo.create_model("mlp", **kwargs)
    assert model.count_params() == parameters
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [d.rate for d in dropouts] == ([kwargs["dropout"]] if "dropout" in kwargs else [])


@pytest.mark.parametrize(
    "input_shape, num_classes", [((64, 64, 3), 10), ((4, 4, 1), 2), ((37, 19, 5), 7)]
)
def test_simple_cnn_takes_any_image_shape_and_class_count(input_shape, num_classes):
    model = zoo.create_model("simple_cnn", input_shape=input_shape, num_classes=num_classes)
    x = np.zeros((2, *input_shape), "float32")
    assert model.predict(x, verbose=0).shape == (2, num_classes)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]


def test_lenet5_is_the_paper_network_padded_to_32x32():
    assert zoo.create_model("lenet5").count_params() == 61_706
    small = zoo.create_model("lenet5", input_shape=(8, 8, 1))
    assert small.count_params() == 61_706
    assert small.get_layer("lenet5_pad").output.shape[1:3] == (32, 32)
