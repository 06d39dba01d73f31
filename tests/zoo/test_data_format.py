"""Every image model honours `keras.config.image_data_format()`: built in
channels_first with the channels_last model's weights, it computes the same
function of the transposed input."""

import keras
import numpy as np
import pytest
from data_format import assert_channels_first_matches, image_data_format, randomize_batch_norm
from tiny import LARGE, TINY_KWARGS

import zoo

IMAGE_MODELS = [name for name, kwargs in TINY_KWARGS.items() if len(kwargs["input_shape"]) == 3]


def test_every_image_family_is_covered():
    families = {zoo.model_info(name).family for name in IMAGE_MODELS}
    assert {"cnn", "resnet", "mobilenet", "vit", "unet", "gan", "vae"} <= families


@pytest.mark.parametrize("name", [n for n in IMAGE_MODELS if n not in LARGE])
def test_channels_first_computes_the_channels_last_function(name):
    assert_channels_first_matches(name, **TINY_KWARGS[name])


# With one channel a layout mistake in a reshape hides; three show it.
@pytest.mark.parametrize("name", ["dcgan", "vae"])
def test_channels_first_with_several_channels(name):
    height, width, _ = TINY_KWARGS[name]["input_shape"]
    assert_channels_first_matches(name, **{**TINY_KWARGS[name], "input_shape": (height, width, 3)})


@pytest.mark.parametrize("name", ["dcgan", "wgan_gp"])
def test_generators_draw_the_same_images_in_channels_first(name):
    """A GAN's `predict` is its discriminator; its generator is checked here."""
    kwargs = {**TINY_KWARGS[name], "input_shape": (8, 8, 3)}
    model = zoo.create_model(name, **kwargs)
    randomize_batch_norm(model.generator)
    noise = np.random.default_rng(0).normal(size=(2, kwargs["latent_dim"])).astype("float32")
    expected = keras.ops.convert_to_numpy(model.generator(noise, training=False))
    with image_data_format("channels_first"):
        transposed = zoo.create_model(name, **{**kwargs, "input_shape": (3, 8, 8)})
        transposed.set_weights(model.get_weights())
        images = keras.ops.convert_to_numpy(transposed.generator(noise, training=False))
    np.testing.assert_allclose(images.transpose(0, 2, 3, 1), expected, atol=1e-5)
