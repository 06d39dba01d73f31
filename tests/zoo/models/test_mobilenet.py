import keras
import pytest
from data_format import assert_channels_first_matches, image_data_format

import zoo
from zoo.models.mobilenet import feature_maps, make_divisible


def test_parameter_count_is_torchvision_s():
    # torchvision's sum(p.numel() for p in mobilenet_v2().parameters()).
    assert zoo.model_info("mobilenet_v2").parameters == 3_504_872


@pytest.mark.parametrize(
    "value, rounded",
    # torchvision's _make_divisible: to the nearest 8, at least 8, at most 10% down.
    [(5.6, 8), (11.2, 16), (18.0, 24), (32.0, 32), (1792.0, 1792), (33.6, 32)],
)
def test_channels_round_as_torchvision_s_make_divisible(value, rounded):
    assert make_divisible(value) == rounded


def test_layer_names_follow_torchvision_module_names():
    model = zoo.create_model("mobilenet_v2")
    names = {layer.name for layer in model.layers}
    for torch_name in (
        "features.0.0",
        "features.0.1",
        "features.1.conv.0.0",  # t=1: no expansion, the depthwise conv comes first
        "features.1.conv.1",
        "features.1.conv.2",
        "features.2.conv.0.0",
        "features.2.conv.1.0",
        "features.2.conv.2",
        "features.2.conv.3",
        "features.17.conv.3",
        "features.18.0",
        "features.18.1",
        "classifier.1",
    ):
        assert "mobilenet_v2_" + torch_name.replace(".", "_") in names
    # torchvision: 52 convolutions (17 depthwise), 52 BatchNorms and one Linear.
    kinds = [type(layer).__name__ for layer in model.layers if layer.weights]
    assert kinds.count("Conv2D") + kinds.count("DepthwiseConv2D") == 52
    assert kinds.count("DepthwiseConv2D") == 17
    assert kinds.count("BatchNormalization") == 52 and kinds.count("Dense") == 1
    depthwise = model.get_layer("mobilenet_v2_features_2_conv_1_0")
    assert tuple(depthwise.kernel.shape) == (3, 3, 96, 1)


@pytest.mark.parametrize(
    "pooling, shape", [(None, (None, 1, 1, 1280)), ("avg", (None, 1280)), ("max", (None, 1280))]
)
def test_headless_with_pooling(pooling, shape):
    model = zoo.create_model(
        "mobilenet_v2", input_shape=(32, 32, 3), include_top=False, pooling=pooling
    )
    assert model.output_shape == shape


def test_width_multiplier_rounds_channels_and_widens_only_the_last_above_one():
    narrow = zoo.create_model("mobilenet_v2", input_shape=(32, 32, 3), alpha=0.35)
    assert narrow.get_layer("mobilenet_v2_features_0_0").filters == 16
    assert narrow.get_layer("mobilenet_v2_features_18_0").filters == 1280
    wide = zoo.create_model("mobilenet_v2", input_shape=(32, 32, 3), alpha=1.4)
    assert wide.get_layer("mobilenet_v2_features_18_0").filters == 1792


def test_feature_maps_are_named_by_stride():
    model = zoo.create_model("mobilenet_v2", input_shape=(64, 64, 3), include_top=False)
    shapes = {name: tuple(t.shape) for name, t in feature_maps(model).output.items()}
    assert shapes == {
        "stride2": (None, 32, 32, 16),
        "stride4": (None, 16, 16, 24),
        "stride8": (None, 8, 8, 32),
        "stride16": (None, 4, 4, 96),
        "stride32": (None, 2, 2, 320),
    }


def test_channels_first_computes_what_channels_last_does():
    model = assert_channels_first_matches(
        "mobilenet_v2", input_shape=(32, 32, 3), num_classes=5, alpha=0.5
    )
    assert model.output_shape == (None, 5)
    with image_data_format("channels_first"):
        headless = zoo.create_model("mobilenet_v2", input_shape=(3, 64, 64), include_top=False)
        features = feature_maps(headless)
    assert headless.output_shape == (None, 1280, 2, 2)
    assert tuple(features.output["stride8"].shape) == (None, 32, 8, 8)
    assert keras.config.image_data_format() == "channels_last"
