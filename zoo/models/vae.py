"""The variational autoencoder (Kingma & Welling, 2014), trained by a custom step."""

import math

import keras
from keras import ops

from zoo import checks, layout
from zoo.registry import register_model
from zoo.steps import CustomStepModel, value_and_grad


@keras.saving.register_keras_serializable(package="zoo")
class VAE(CustomStepModel):
    """An MLP encoder to a Gaussian posterior, reparameterised sampling with a
    `SeedGenerator`, and an MLP decoder to Bernoulli pixel means.

    The loss is the negative ELBO: summed per-pixel binary cross-entropy plus the
    KL divergence to the unit Gaussian prior.
    """

    def __init__(self, *, input_shape=(28, 28, 1), latent_dim=16, hidden_units=256, **kwargs):
        super().__init__(**kwargs)
        name = self.name
        self.image_shape = checks.shape(input_shape, model=name)
        self.latent_dim = checks.positive_int(latent_dim, name="latent_dim", model=name)
        self.hidden_units = checks.positive_int(hidden_units, name="hidden_units", model=name)

        inputs = keras.Input(shape=self.image_shape, name=f"{name}_encoder_image")
        x = keras.layers.Flatten(name=f"{name}_encoder_flatten")(inputs)
        x = keras.layers.Dense(hidden_units, activation="relu", name=f"{name}_encoder_hidden")(x)
        z_mean = keras.layers.Dense(latent_dim, name=f"{name}_encoder_z_mean")(x)
        z_log_var = keras.layers.Dense(latent_dim, name=f"{name}_encoder_z_log_var")(x)
        self.encoder = keras.Model(inputs, [z_mean, z_log_var], name=f"{name}_encoder")

        latent = keras.Input(shape=(latent_dim,), name=f"{name}_decoder_z")
        x = keras.layers.Dense(hidden_units, activation="relu", name=f"{name}_decoder_hidden")(
            latent
        )
        x = keras.layers.Dense(
            math.prod(self.image_shape), activation="sigmoid", name=f"{name}_decoder_pixels"
        )(x)
        image = (
            layout.reshape_to_image(x, self.image_shape, name=f"{name}_decoder_image")
            if len(self.image_shape) == 3
            else keras.layers.Reshape(self.image_shape, name=f"{name}_decoder_image_reshape")(x)
        )
        self.decoder = keras.Model(latent, image, name=f"{name}_decoder")

        self.seed_generator = keras.random.SeedGenerator(name=f"{name}_seed")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")
        self.built = True  # the encoder and decoder are built above

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def call(self, images):
        """The reconstruction from the posterior mean."""
        z_mean, _ = self.encoder(images)
        return self.decoder(z_mean)

    def generate(self, num_samples, seed=None):
        """Decodes `num_samples` draws from the prior."""
        z = keras.random.normal(
            (num_samples, self.latent_dim), seed=self.seed_generator if seed is None else seed
        )
        return self.decoder(z, training=False)

    def losses_for(self, images, training=True, epsilon=None):
        """`(loss, (reconstruction_loss, kl_loss))`, each a mean over the batch.

        `epsilon`, the reparameterisation noise, is drawn from the model's seed
        generator unless given.
        """
        z_mean, z_log_var = self.encoder(images, training=training)
        if epsilon is None:
            epsilon = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
        z = z_mean + ops.exp(0.5 * z_log_var) * epsilon
        reconstruction = self.decoder(z, training=training)
        pixel_losses = ops.binary_crossentropy(images, reconstruction)
        reconstruction_loss = ops.mean(
            ops.sum(ops.reshape(pixel_losses, (ops.shape(images)[0], -1)), axis=1)
        )
        kl = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
        kl_loss = ops.mean(ops.sum(kl, axis=1))
        return reconstruction_loss + kl_loss, (reconstruction_loss, kl_loss)

    def fit_step(self, data):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.trainable_variables
        (loss, parts), grads = value_and_grad(
            lambda: self.losses_for(images), variables, has_aux=True
        )
        self.optimizer["model"].apply(grads, variables)
        return self._log(loss, *parts)

    def evaluate_step(self, data):
        images, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        loss, parts = self.losses_for(images, training=False)
        return self._log(loss, *parts)

    def _log(self, loss, reconstruction_loss, kl_loss):
        self.loss_tracker.update_state(loss)
        self.reconstruction_tracker.update_state(reconstruction_loss)
        self.kl_tracker.update_state(kl_loss)
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        return {
            **super().get_config(),
            "input_shape": self.image_shape,
            "latent_dim": self.latent_dim,
            "hidden_units": self.hidden_units,
        }


@register_model(
    task="generative",
    source="https://keras.io/examples/generative/vae/",
    paper="Kingma & Welling, Auto-Encoding Variational Bayes, ICLR 2014",
)
def vae(*, input_shape=(28, 28, 1), latent_dim=16, hidden_units=256, name="vae"):
    """Variational autoencoder with MLP encoder and decoder.

    Args:
        input_shape: shape of one sample, values in [0, 1]. Defaults to `(28, 28, 1)`.
        latent_dim: size of the latent code. Defaults to `16`.
        hidden_units: width of the encoder's and decoder's hidden layer.
            Defaults to `256`.
        name: model name, also the prefix of its layer names. Defaults to `"vae"`.
    """
    checks.model_name(name)
    return VAE(input_shape=input_shape, latent_dim=latent_dim, hidden_units=hidden_units, name=name)
