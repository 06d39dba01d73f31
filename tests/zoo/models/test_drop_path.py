"""Stochastic depth (timm's drop path) in every family with residual blocks:
the identity at inference, whole residual branches dropped in training, rates
rising over the blocks as timm's, and no weight of its own."""

import keras
import numpy as np
import pytest
from tiny import TINY_KWARGS

import zoo

NAMES = [n for n in zoo.list_models() if "drop_path_rate" in zoo.model_arguments(n)]
RATE = 0.5


def _drop_paths(model):
    """The drop path layers of a model, by name, in the order of its blocks."""
    return {
        layer.name: layer
        for layer in model.layers
        if isinstance(layer, keras.layers.Dropout) and "_drop_path" in layer.name
    }


def test_the_residual_families_take_a_drop_path_rate():
    assert set(NAMES) == {"resnet18", "resnet34", "resnet50", "mobilenet_v2", "vit_tiny"}


@pytest.mark.parametrize("name", NAMES)
def test_drop_path_is_the_identity_at_inference_and_drops_whole_branches_in_training(
    name, tmp_path
):
    keras.utils.set_random_seed(0)
    plain = zoo.create_model(name, **TINY_KWARGS[name])
    dropped = zoo.create_model(name, **TINY_KWARGS[name], drop_path_rate=RATE)
    # No weight of its own: the plain model's weights file (a pretrained one) loads as it is.
    assert sorted(w.path for w in dropped.weights) == sorted(w.path for w in plain.weights)
    zoo.save_weights(plain, tmp_path / "plain.weights.h5")
    zoo.load_weights(dropped, tmp_path / "plain.weights.h5")
    weights = {w.path: keras.ops.convert_to_numpy(w) for w in plain.weights}
    for weight in dropped.weights:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(weight), weights[weight.path])
    x = np.random.default_rng(0).uniform(0, 1, (16, *plain.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(dropped(x, training=False)),
        keras.ops.convert_to_numpy(plain(x, training=False)),
        atol=1e-6,
    )

    layers = _drop_paths(dropped)
    rates = [layer.rate for layer in layers.values()]
    assert rates == sorted(rates) and rates[0] > 0 and max(rates) <= RATE

    # The last block's branch, in training: each sample's is zero or scaled by 1 / keep.
    last = list(layers.values())[-1]
    probe = keras.Model(dropped.input, [last.input, last.output])
    branch, kept = (keras.ops.convert_to_numpy(t) for t in probe(x, training=True))
    zero = np.all(kept == 0, axis=tuple(range(1, kept.ndim)))
    assert 0 < zero.sum() < len(x)
    np.testing.assert_allclose(kept[~zero], branch[~zero] / (1 - last.rate), rtol=1e-5, atol=1e-6)
    assert np.abs(branch[zero]).max() > 0  # dropped, not zero by itself

    path = tmp_path / f"{name}.keras"
    zoo.save_model(dropped, path)
    loaded = zoo.load_model(path)
    assert [layer.rate for layer in _drop_paths(loaded).values()] == rates


def test_rates_rise_linearly_as_timm_s():
    def rates(name, **kwargs):
        model = zoo.create_model(name, **{**TINY_KWARGS[name], **kwargs}, drop_path_rate=0.4)
        return {k.removeprefix(f"{name}_"): v.rate for k, v in _drop_paths(model).items()}

    # timm's ResNet: block i of n at rate * i / (n - 1); the first block's is 0.
    resnet = rates("resnet18")
    assert list(resnet) == [f"layer{s}_{i}_drop_path" for s in (1, 2, 3, 4) for i in (0, 1)][1:]
    np.testing.assert_allclose(list(resnet.values()), [0.4 * i / 7 for i in range(1, 8)])
    # timm's ViT: torch.linspace(0, rate, depth) on both branches of each block.
    vit = rates("vit_tiny", depth=3)
    assert vit == pytest.approx(
        {f"blocks_{b}_drop_path{i}": 0.2 * b for b in (1, 2) for i in (1, 2)}
    )
    # timm's EfficientNet builder: block i of n at rate * i / n, on the blocks
    # with a residual connection (features.1 is block 0 of 17).
    mobilenet = rates("mobilenet_v2")
    residual = (3, 5, 6, 8, 9, 10, 12, 13, 15, 16)
    assert mobilenet == pytest.approx(
        {f"features_{f}_drop_path": 0.4 * (f - 1) / 17 for f in residual}
    )
