"""Generative adversarial networks, trained by a custom step written once.

DCGAN (Radford et al., 2015) and WGAN-GP (Gulrajani et al., 2017). The WGAN-GP
critic loss holds a gradient penalty: the gradient of a gradient.
"""

import keras
from keras import ops

from zoo import checks, layout
from zoo.errors import ZooError
from zoo.registry import register_model
from zoo.steps import CustomStepModel, value_and_grad


def _image_layout(input_shape, *, name):
    """Returns `(shape, (height, width), channels)`; sizes must divide by 4."""
    shape, (height, width) = checks.image_shape(input_shape, model=name, min_size=4)
    if height % 4 or width % 4:
        raise ZooError(
            f"{name} expects image height and width divisible by 4 (two 2x "
            f"upsamplings). Received: input_shape={tuple(input_shape)!r}"
        )
    return shape, (height, width), shape[-1] if layout.channels_last() else shape[0]


def build_generator(*, input_shape, latent_dim, name):
    """Noise `(latent_dim,)` → an image in [0, 1]: dense, then two 2x
    transposed convolutions, each followed by BatchNorm and ReLU."""
    _, (height, width), channels = _image_layout(input_shape, name=name)
    start = (
        (height // 4, width // 4, 128) if layout.channels_last() else (128, height // 4, width // 4)
    )

    inputs = keras.Input(shape=(latent_dim,), name=f"{name}_noise")
    x = keras.layers.Dense(height * width * 8, name=f"{name}_project")(inputs)
    x = layout.reshape_to_image(x, start, name=name)
    x = keras.layers.BatchNormalization(axis=layout.channel_axis(), name=f"{name}_bn0")(x)
    x = keras.layers.ReLU(name=f"{name}_relu0")(x)
    for i, filters in enumerate((64, 32), start=1):
        x = keras.layers.Conv2DTranspose(
            filters, 4, strides=2, padding="same", name=f"{name}_up{i}"
        )(x)
        x = keras.layers.BatchNormalization(axis=layout.channel_axis(), name=f"{name}_bn{i}")(x)
        x = keras.layers.ReLU(name=f"{name}_relu{i}")(x)
    outputs = keras.layers.Conv2D(
        channels, 3, padding="same", activation="sigmoid", name=f"{name}_image"
    )(x)
    return keras.Model(inputs, outputs, name=name)


def build_critic(*, input_shape, name):
    """An image → one unbounded score: two strided convolutions with LeakyReLU.

    No BatchNorm: the gradient penalty is per sample, which batch statistics
    would break.
    """
    shape, _, _ = _image_layout(input_shape, name=name)
    inputs = keras.Input(shape=shape, name=f"{name}_image")
    x = inputs
    for i, filters in enumerate((64, 128), start=1):
        x = keras.layers.Conv2D(filters, 4, strides=2, padding="same", name=f"{name}_conv{i}")(x)
        x = keras.layers.LeakyReLU(0.2, name=f"{name}_lrelu{i}")(x)
    x = keras.layers.Flatten(name=f"{name}_flatten")(x)
    outputs = keras.layers.Dense(1, name=f"{name}_score")(x)
    return keras.Model(inputs, outputs, name=name)


class _GAN(CustomStepModel):
    """A generator and a discriminator (or critic), each with its own optimizer."""

    optimizer_groups = ("generator", "discriminator")

    def __init__(self, *, input_shape=(28, 28, 1), latent_dim=64, **kwargs):
        super().__init__(**kwargs)
        self.image_shape, _, _ = _image_layout(input_shape, name=self.name)
        self.latent_dim = checks.positive_int(latent_dim, name="latent_dim", model=self.name)
        self.generator = build_generator(
            input_shape=input_shape, latent_dim=latent_dim, name=f"{self.name}_generator"
        )
        self.discriminator = build_critic(
            input_shape=input_shape, name=f"{self.name}_discriminator"
        )
        self.seed_generator = keras.random.SeedGenerator(name=f"{self.name}_seed")
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        # The sub-models are functional and built above; so is the whole.
        self.built = True

    #: Adam's arguments for both networks (the recipes measured on digits:
    #: the generic 5e-3 with beta_1=0.9 collapses DCGAN to a single image).
    adam = {"learning_rate": 1e-3, "beta_1": 0.5}

    def default_optimizer(self):
        return keras.optimizers.Adam(**self.adam)

    def call(self, images):
        """The discriminator's logits (or critic scores) for `images`."""
        return self.discriminator(images)

    def generate(self, num_samples, seed=None):
        """`num_samples` images from fresh noise; `seed` makes them repeatable."""
        noise = keras.random.normal(
            (num_samples, self.latent_dim), seed=self.seed_generator if seed is None else seed
        )
        return self.generator(noise, training=False)

    def noise(self, batch_size):
        return keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)

    def get_config(self):
        return {
            **super().get_config(),
            "input_shape": self.image_shape,
            "latent_dim": self.latent_dim,
        }


@keras.saving.register_keras_serializable(package="zoo")
class DCGAN(_GAN):
    """DCGAN: the non-saturating GAN loss, binary cross-entropy on logits."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True)

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker]

    def losses_for(self, images, noise, training):
        """`(d_loss, g_loss)` for a batch of real images and generator noise."""
        fake = self.generator(noise, training=training)
        real_logits = self.discriminator(images, training=training)
        fake_logits = self.discriminator(fake, training=training)
        d_loss = self.bce(ops.ones_like(real_logits), real_logits) + self.bce(
            ops.zeros_like(fake_logits), fake_logits
        )
        g_loss = self.bce(ops.ones_like(fake_logits), fake_logits)
        return d_loss, g_loss

    def fit_step(self, data):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        batch_size = ops.shape(images)[0]

        d_vars = self.discriminator.trainable_variables
        noise = self.noise(batch_size)
        d_loss, d_grads = value_and_grad(lambda: self.losses_for(images, noise, True)[0], d_vars)
        self.optimizer["discriminator"].apply(d_grads, d_vars)

        g_vars = self.generator.trainable_variables
        noise = self.noise(batch_size)
        g_loss, g_grads = value_and_grad(lambda: self.losses_for(images, noise, True)[1], g_vars)
        self.optimizer["generator"].apply(g_grads, g_vars)
        return self._log(d_loss, g_loss)

    def evaluate_step(self, data):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._log(*self.losses_for(images, self.noise(ops.shape(images)[0]), False))

    def _log(self, d_loss, g_loss):
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        return {m.name: m.result() for m in self.metrics}


@keras.saving.register_keras_serializable(package="zoo")
class WGANGP(_GAN):
    """WGAN-GP: a Wasserstein critic with a penalty on its input gradient's norm.

    Args:
        critic_steps: critic updates per generator update. Defaults to `3`.
        gp_weight: weight of the gradient penalty. Defaults to `10.0`.
    """

    # The WGAN-GP paper's Adam betas, with keras-io's learning rate.
    adam = {"learning_rate": 2e-4, "beta_1": 0.5, "beta_2": 0.9}

    def __init__(self, *, critic_steps=3, gp_weight=10.0, **kwargs):
        super().__init__(**kwargs)
        self.critic_steps = checks.positive_int(critic_steps, name="critic_steps", model=self.name)
        self.gp_weight = checks.non_negative_number(gp_weight, name="gp_weight", model=self.name)
        self.gp_tracker = keras.metrics.Mean(name="gradient_penalty")

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker, self.gp_tracker]

    def gradient_penalty(self, real, fake, alpha):
        """Mean of (||d critic / d x||_2 - 1)^2 at `x = real + alpha (fake - real)`."""
        # ops, not operators: `real` may be a NumPy array (train_on_batch on torch).
        mixed = ops.add(real, alpha * ops.subtract(fake, real))
        _, grads = value_and_grad(lambda x: ops.sum(self.discriminator(x, training=True)), mixed)
        norms = ops.sqrt(ops.sum(ops.square(grads), axis=(1, 2, 3)) + 1e-12)
        return ops.mean(ops.square(norms - 1.0))

    def critic_loss(self, real, noise, alpha, training=True):
        """`(critic loss with penalty, penalty)`."""
        fake = self.generator(noise, training=training)
        wasserstein = ops.mean(self.discriminator(fake, training=training)) - ops.mean(
            self.discriminator(real, training=training)
        )
        penalty = self.gradient_penalty(real, fake, alpha)
        return wasserstein + self.gp_weight * penalty, penalty

    def generator_loss(self, noise, training=True):
        return -ops.mean(
            self.discriminator(self.generator(noise, training=training), training=training)
        )

    def fit_step(self, data):
        real, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        batch_size = ops.shape(real)[0]
        d_vars = self.discriminator.trainable_variables
        for _ in range(self.critic_steps):
            noise, alpha = self.noise(batch_size), self._alpha(batch_size)
            (d_loss, penalty), d_grads = value_and_grad(
                lambda noise=noise, alpha=alpha: self.critic_loss(real, noise, alpha),
                d_vars,
                has_aux=True,
            )
            self.optimizer["discriminator"].apply(d_grads, d_vars)

        g_vars = self.generator.trainable_variables
        noise = self.noise(batch_size)
        g_loss, g_grads = value_and_grad(lambda: self.generator_loss(noise), g_vars)
        self.optimizer["generator"].apply(g_grads, g_vars)
        return self._log(d_loss, g_loss, penalty)

    def evaluate_step(self, data):
        real, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        batch_size = ops.shape(real)[0]
        noise = self.noise(batch_size)
        d_loss, penalty = self.critic_loss(real, noise, self._alpha(batch_size), training=False)
        return self._log(d_loss, self.generator_loss(noise, training=False), penalty)

    def _alpha(self, batch_size):
        return keras.random.uniform((batch_size, 1, 1, 1), seed=self.seed_generator)

    def _log(self, d_loss, g_loss, penalty):
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        self.gp_tracker.update_state(penalty)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        return {
            **super().get_config(),
            "critic_steps": self.critic_steps,
            "gp_weight": self.gp_weight,
        }


@register_model(
    task="generative",
    source="https://keras.io/examples/generative/dcgan_overriding_train_step/",
    paper="Radford et al., Unsupervised Representation Learning with Deep "
    "Convolutional GANs, ICLR 2016",
)
def dcgan(*, input_shape=(28, 28, 1), latent_dim=64, name="dcgan"):
    """DCGAN: a BatchNorm generator and a convolutional discriminator.

    Args:
        input_shape: image shape, height and width divisible by 4.
            Defaults to `(28, 28, 1)`.
        latent_dim: size of the generator's noise. Defaults to `64`.
        name: model name, also the prefix of its layer names. Defaults to `"dcgan"`.
    """
    checks.model_name(name)
    return DCGAN(input_shape=input_shape, latent_dim=latent_dim, name=name)


@register_model(
    task="generative",
    source="https://keras.io/examples/generative/wgan_gp/",
    paper="Gulrajani et al., Improved Training of Wasserstein GANs, NeurIPS 2017",
)
def wgan_gp(
    *, input_shape=(28, 28, 1), latent_dim=64, critic_steps=3, gp_weight=10.0, name="wgan_gp"
):
    """WGAN-GP: a Wasserstein critic with a gradient penalty.

    Args:
        input_shape: image shape, height and width divisible by 4.
            Defaults to `(28, 28, 1)`.
        latent_dim: size of the generator's noise. Defaults to `64`.
        critic_steps: critic updates per generator update. Defaults to `3`.
        gp_weight: weight of the gradient penalty. Defaults to `10.0`.
        name: model name, also the prefix of its layer names. Defaults to `"wgan_gp"`.
    """
    checks.model_name(name)
    return WGANGP(
        input_shape=input_shape,
        latent_dim=latent_dim,
        critic_steps=critic_steps,
        gp_weight=gp_weight,
        name=name,
    )
