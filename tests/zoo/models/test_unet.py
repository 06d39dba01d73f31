import keras
import numpy as np
import pytest

import training
import zoo
from zoo.models.unet import feature_maps


def test_output_keeps_the_input_resolution_and_features_are_named():
    model = zoo.create_model("unet_small", input_shape=(32, 32, 3), num_classes=5)
    assert model.output_shape == (None, 32, 32, 5)
    shapes = {name: tuple(t.shape[1:]) for name, t in feature_maps(model).output.items()}
    assert shapes == {
        "down1": (32, 32, 16),
        "down2": (16, 16, 32),
        "down3": (8, 8, 64),
        "bottleneck": (4, 4, 128),
        "up3": (8, 8, 64),
        "up2": (16, 16, 32),
        "up1": (32, 32, 16),
    }


@pytest.mark.parametrize(
    "pooling, shape", [(None, (None, 16, 16, 16)), ("avg", (None, 16)), ("max", (None, 16))]
)
def test_headless_returns_the_last_decoder_features(pooling, shape):
    model = zoo.create_model(
        "unet_small", input_shape=(16, 16, 1), include_top=False, pooling=pooling
    )
    assert model.output_shape == shape
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 1)).astype("float32")
    features = keras.ops.convert_to_numpy(feature_maps(model)(x)["up1"])
    reduce = {
        None: lambda f: f,
        "avg": lambda f: f.mean(axis=(1, 2)),
        "max": lambda f: f.max(axis=(1, 2)),
    }
    np.testing.assert_allclose(model.predict(x, verbose=0), reduce[pooling](features), atol=1e-5)


def test_segmentation_data_labels_each_digit_s_strokes():
    data = training.load_dataset("digits_segmentation")
    assert data.task == "segmentation" and data.num_classes == 11
    assert data.y_train.shape == data.x_train.shape[:3] and data.y_train.dtype == np.int32
    # Every mask holds background and exactly one digit.
    for mask in data.y_train[:50]:
        assert len(set(np.unique(mask)) - {0}) == 1


def test_trains_on_digits_segmentation():
    result = training.fit(
        "unet_small",
        "digits_segmentation",
        epochs=6,
        batch_size=16,
        model_kwargs={"depth": 2},
        verbose=0,
    )
    # Background alone scores a mean IoU of about 0.06 over the 11 classes;
    # These 6 epochs reach 0.8-0.9.
    assert result.metrics["test_mean_iou"] > 0.5, result.metrics
    assert result.model.output_shape == (None, 8, 8, 11)
