import functools

import keras
import numpy as np
import pytest
from tiny import LARGE, TINY_KWARGS

import zoo
from zoo.flops import count_flops


@pytest.mark.parametrize(
    "model_name, multiply_adds",
    # torchvision's and timm's tables (their "GFLOPS" and "GMACs" are multiply-adds).
    [
        ("resnet18", 1.81e9),
        ("resnet34", 3.66e9),
        ("resnet50", 4.09e9),
        ("mobilenet_v2", 0.30e9),
        ("vit_tiny", 1.26e9),
    ],
)
def test_flops_at_the_default_input_match_the_published_figures(model_name, multiply_adds):
    assert zoo.model_info(model_name).flops == pytest.approx(2 * multiply_adds, rel=0.01)


def test_every_model_with_a_static_graph_reports_flops():
    for name in zoo.list_models():
        model = zoo.create_model(name, **TINY_KWARGS[name])
        if zoo.model_style(model) == "subclassed" or name == "mini_gpt":
            # Unknown before they run: a custom call, sequences of any length.
            assert count_flops(model) is None, name
        else:
            assert count_flops(model) > 0, name


def test_flops_follow_the_input_size():
    # A fully convolutional network: four times the pixels, four times the work.
    small = count_flops(zoo.create_model("unet_small", input_shape=(32, 32, 3)))
    large = count_flops(zoo.create_model("unet_small", input_shape=(64, 64, 3)))
    assert large == 4 * small


@functools.cache
def _torch_flop_counter():
    import torch
    from torch.utils import flop_counter

    # Keras runs attention through the CPU flash kernel, which torch's counter
    # does not list; its cost is that of the other attention kernels.
    flop_counter.register_flop_formula(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)(
        lambda q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_flop_count(q, k, v)
    )
    return flop_counter


@pytest.mark.parametrize("name", [n for n in TINY_KWARGS if n not in LARGE])
def test_flops_equal_what_torch_counts_running_the_model(name):
    """torch's own counter, over the operations the model really runs, gives
    the same count: the convolutions, matmuls and attention of one forward pass."""
    if keras.backend.backend() != "torch":
        pytest.skip("torch.utils.flop_counter counts only the torch backend's operations")
    import torch

    flop_counter = _torch_flop_counter()
    kwargs = TINY_KWARGS[name]
    model = zoo.create_model(name, **kwargs)
    expected = count_flops(model)
    if expected is None:
        pytest.skip(f"{name} has no static graph to count")
    dtype = "int32" if "vocab_size" in kwargs else "float32"
    with flop_counter.FlopCounterMode(display=False) as counter, torch.no_grad():
        model(np.zeros((1, *kwargs["input_shape"]), dtype), training=False)
    assert counter.get_total_flops() == expected
