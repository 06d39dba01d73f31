import keras
import numpy as np
import pytest
from data_format import assert_channels_first_matches, image_data_format

import zoo
from zoo.models.vit import feature_maps

SMALL = {
    "input_shape": (16, 16, 3),
    "patch_size": 4,
    "embed_dim": 8,
    "depth": 2,
    "num_heads": 2,
    "mlp_dim": 16,
}


def test_parameter_count_is_timm_s():
    # timm's vit_tiny_patch16_224: sum(p.numel() for p in model.parameters()).
    assert zoo.model_info("vit_tiny").parameters == 5_717_416


def test_layer_names_follow_timm_module_names():
    model = zoo.create_model("vit_tiny")
    names = {layer.name for layer in model.layers}
    for timm_name in (
        "patch_embed.proj",
        "cls_token",
        "pos_embed",
        "blocks.0.norm1",
        "blocks.0.attn",
        "blocks.0.norm2",
        "blocks.0.mlp.fc1",
        "blocks.11.mlp.fc2",
        "norm",
        "head",
    ):
        assert "vit_tiny_" + timm_name.replace(".", "_") in names
    assert "vit_tiny_blocks_12_norm1" not in names
    shapes = {w.path: tuple(w.shape) for w in model.weights}
    assert shapes["vit_tiny_cls_token/token"] == (1, 1, 192)
    assert shapes["vit_tiny_pos_embed/embedding"] == (1, 197, 192)
    assert shapes["vit_tiny_patch_embed_proj/kernel"] == (16, 16, 3, 192)


@pytest.mark.parametrize("pooling, shape", [("token", (None, 8)), ("avg", (None, 8))])
def test_head_and_headless_shapes(pooling, shape):
    top = zoo.create_model("vit_tiny", **SMALL, num_classes=3, pooling=pooling)
    assert top.output_shape == (None, 3)
    headless = zoo.create_model("vit_tiny", **SMALL, include_top=False, pooling=pooling)
    assert headless.output_shape == shape


def test_pooling_takes_the_class_token_or_the_mean_of_the_patch_tokens():
    x = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype("float32")
    tokens = zoo.create_model("vit_tiny", **SMALL, include_top=False, pooling=None)
    assert tokens.output_shape == (None, 17, 8)  # the class token and 16 patches
    sequence = tokens.predict(x, verbose=0)

    token = zoo.create_model("vit_tiny", **SMALL, include_top=False, pooling="token")
    token.set_weights(tokens.get_weights())
    np.testing.assert_allclose(token.predict(x, verbose=0), sequence[:, 0], atol=1e-5)

    # As timm: mean of the patch tokens, then the final LayerNorm (fc_norm).
    avg = zoo.create_model("vit_tiny", **SMALL, include_top=False, pooling="avg")
    avg.set_weights(tokens.get_weights())
    blocks = feature_maps(tokens).predict(x, verbose=0)["block_1"]
    mean = blocks[:, 1:].mean(axis=1)
    expected = (mean - mean.mean(-1, keepdims=True)) / np.sqrt(mean.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(avg.predict(x, verbose=0), expected, atol=1e-4)


def test_feature_maps_are_each_block_s_tokens():
    model = zoo.create_model("vit_tiny", **{**SMALL, "depth": 3}, num_classes=3)
    shapes = {name: tuple(t.shape) for name, t in feature_maps(model).output.items()}
    assert shapes == {f"block_{i}": (None, 17, 8) for i in range(3)}


def test_channels_first_computes_what_channels_last_does():
    # Non-square, so a wrong patch order or transpose shows.
    kwargs = {**SMALL, "input_shape": (8, 16, 3), "num_classes": 5}
    model = assert_channels_first_matches("vit_tiny", **kwargs)
    assert model.output_shape == (None, 5)
    with image_data_format("channels_first"):
        tokens = zoo.create_model(
            "vit_tiny", **{**SMALL, "input_shape": (3, 8, 16)}, include_top=False, pooling=None
        )
        with pytest.raises(zoo.ZooError, match=r"\(channels, height, width\)"):
            zoo.create_model("vit_tiny", **{**SMALL, "input_shape": (16, 16, 3)})
    assert tokens.output_shape == (None, 9, 8)
    assert keras.config.image_data_format() == "channels_last"
