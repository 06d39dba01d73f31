import pytest

import zoo
from zoo.models.resnet import feature_maps


@pytest.mark.parametrize(
    "model_name, parameters",
    # torchvision's sum(p.numel() for p in model.parameters()) at 1000 classes.
    [("resnet18", 11_689_512), ("resnet34", 21_797_672), ("resnet50", 25_557_032)],
)
def test_parameter_counts_are_torchvision_s(model_name, parameters):
    # Building is quick even for the large variants; only training them is not.
    assert zoo.model_info(model_name).parameters == parameters


def test_layer_names_follow_torchvision_module_names():
    names = {layer.name for layer in zoo.create_model("resnet50").layers}
    for torch_name in (
        "conv1",
        "bn1",
        "layer1.0.conv3",
        "layer4.2.bn3",
        "layer2.0.downsample.0",
        "fc",
    ):
        assert "resnet50_" + torch_name.replace(".", "_") in names


@pytest.mark.parametrize(
    "pooling, shape", [(None, (None, 1, 1, 512)), ("avg", (None, 512)), ("max", (None, 512))]
)
def test_headless_with_pooling(pooling, shape):
    model = zoo.create_model(
        "resnet18", input_shape=(32, 32, 3), include_top=False, pooling=pooling
    )
    assert model.output_shape == shape


def test_small_stem_keeps_32x32_resolution_and_features_are_named():
    model = zoo.create_model("resnet18", input_shape=(32, 32, 3), stem="small", include_top=False)
    shapes = {name: tuple(t.shape) for name, t in feature_maps(model).output.items()}
    assert shapes == {
        "layer1": (None, 32, 32, 64),
        "layer2": (None, 16, 16, 128),
        "layer3": (None, 8, 8, 256),
        "layer4": (None, 4, 4, 512),
    }
