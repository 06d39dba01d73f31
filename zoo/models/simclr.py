"""SimCLR (Chen et al., 2020): contrastive self-supervised learning, trained by a
custom step, with a linear probe trained alongside on frozen features."""

import keras
from keras import ops

from zoo import checks
from zoo.registry import register_model
from zoo.steps import CustomStepModel, allow_xla, value_and_grad


def nt_xent(z1, z2, *, temperature):
    """The normalised temperature-scaled cross-entropy of two views' projections.

    Each embedding's positive is the other view of the same image; the other
    `2N - 2` embeddings in the batch are its negatives.
    """
    n = ops.shape(z1)[0]
    z = ops.normalize(ops.concatenate([z1, z2], axis=0), axis=1)
    similarity = ops.matmul(z, ops.transpose(z)) / temperature
    # An embedding is not its own negative. (A large finite value: 1e9 would be
    # inf in float16, and inf * 0 is NaN.)
    self_pairs = ops.eye(2 * n, dtype="bool")
    similarity = ops.where(self_pairs, ops.full_like(similarity, -1e4), similarity)
    positives = ops.concatenate([ops.arange(n, 2 * n), ops.arange(0, n)], axis=0)
    return ops.mean(
        keras.losses.sparse_categorical_crossentropy(positives, similarity, from_logits=True)
    )


@keras.saving.register_keras_serializable(package="zoo")
class SimCLR(CustomStepModel):
    """A convolutional encoder and projection head trained with NT-Xent on two
    augmented views of each image.

    When the data has labels, a linear probe learns to classify the encoder's
    features with its own optimizer; the features are held fixed for it
    (`stop_gradient`), so the probe measures the representation without
    shaping it. `probe_accuracy` is the linear-probe evaluation.
    """

    optimizer_groups = {"contrastive": ("encoder", "projection_head"), "probe": ("probe",)}

    def __init__(
        self, *, input_shape=(28, 28, 1), num_classes=10, width=64, temperature=0.2, **kwargs
    ):
        super().__init__(**kwargs)
        name = self.name
        self.image_shape, _ = checks.image_shape(input_shape, model=name, min_size=4)
        self.num_classes = checks.positive_int(num_classes, name="num_classes", model=name)
        self.width = checks.positive_int(width, name="width", model=name)
        self.temperature = checks.positive_number(temperature, name="temperature", model=name)

        self.augmenter = keras.Sequential(
            [
                keras.Input(shape=self.image_shape, name=f"{name}_augmenter_image"),
                keras.layers.RandomTranslation(
                    0.2, 0.2, fill_mode="constant", name=f"{name}_translate"
                ),
                keras.layers.RandomZoom((-0.2, 0.2), fill_mode="constant", name=f"{name}_zoom"),
                keras.layers.GaussianNoise(0.1, name=f"{name}_noise"),
            ],
            name=f"{name}_augmenter",
        )
        allow_xla(self.augmenter.layers)
        inputs = keras.Input(shape=self.image_shape, name=f"{name}_encoder_image")
        x = keras.layers.Conv2D(
            32, 3, padding="same", activation="relu", name=f"{name}_encoder_conv1"
        )(inputs)
        x = keras.layers.Conv2D(
            64, 3, strides=2, padding="same", activation="relu", name=f"{name}_encoder_conv2"
        )(x)
        x = keras.layers.GlobalAveragePooling2D(name=f"{name}_encoder_pool")(x)
        features = keras.layers.Dense(width, activation="relu", name=f"{name}_encoder_features")(x)
        self.encoder = keras.Model(inputs, features, name=f"{name}_encoder")
        self.projection_head = keras.Sequential(
            [
                keras.Input(shape=(width,), name=f"{name}_head_features"),
                keras.layers.Dense(width, activation="relu", name=f"{name}_head_hidden"),
                keras.layers.Dense(width, name=f"{name}_head_projection"),
            ],
            name=f"{name}_projection_head",
        )
        self.probe = keras.Sequential(
            [
                keras.Input(shape=(width,), name=f"{name}_probe_features"),
                # Standardised features, no affine: the probe stays linear (as in MAE).
                keras.layers.BatchNormalization(center=False, scale=False, name=f"{name}_probe_bn"),
                keras.layers.Dense(num_classes, name=f"{name}_probe_logits"),
            ],
            name=f"{name}_probe",
        )
        self.contrastive_tracker = keras.metrics.Mean(name="contrastive_loss")
        self.probe_loss_tracker = keras.metrics.Mean(name="probe_loss")
        self.probe_accuracy = keras.metrics.SparseCategoricalAccuracy(name="probe_accuracy")
        self.labels_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.built = True  # every sub-model is built above

    @property
    def metrics(self):
        return [self.contrastive_tracker, self.probe_loss_tracker, self.probe_accuracy]

    def call(self, images):
        """The linear probe's logits on the encoder's features."""
        return self.probe(self.encoder(images))

    def contrastive_loss(self, images, training=True):
        """NT-Xent between the projections of two random augmentations."""
        view1 = self.augmenter(images, training=True)
        view2 = self.augmenter(images, training=True)
        return self.projection_loss(view1, view2, training)

    def projection_loss(self, view1, view2, training=True):
        """NT-Xent between the projections of two given views."""
        z1 = self.projection_head(self.encoder(view1, training=training), training=training)
        z2 = self.projection_head(self.encoder(view2, training=training), training=training)
        return nt_xent(z1, z2, temperature=self.temperature)

    def fit_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.group_variables("contrastive")
        loss, grads = value_and_grad(lambda: self.contrastive_loss(images), variables)
        self.optimizer["contrastive"].apply(grads, variables)
        self.contrastive_tracker.update_state(loss)
        if labels is not None:
            features = ops.stop_gradient(self.encoder(images, training=False))
            probe_vars = self.probe.trainable_variables
            (probe_loss, logits), probe_grads = value_and_grad(
                lambda: self._probe_loss(features, labels), probe_vars, has_aux=True
            )
            self.optimizer["probe"].apply(probe_grads, probe_vars)
            self._log_probe(labels, probe_loss, logits)
        return {m.name: m.result() for m in self.metrics}

    def evaluate_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        self.contrastive_tracker.update_state(self.contrastive_loss(images, training=False))
        if labels is not None:
            features = self.encoder(images, training=False)
            self._log_probe(labels, *self._probe_loss(features, labels, training=False))
        return {m.name: m.result() for m in self.metrics}

    def _probe_loss(self, features, labels, training=True):
        logits = self.probe(features, training=training)
        return self.labels_loss(labels, logits), logits

    def _log_probe(self, labels, loss, logits):
        self.probe_loss_tracker.update_state(loss)
        self.probe_accuracy.update_state(labels, logits)

    def get_config(self):
        return {
            **super().get_config(),
            "input_shape": self.image_shape,
            "num_classes": self.num_classes,
            "width": self.width,
            "temperature": self.temperature,
        }


@register_model(
    task="self_supervised",
    source="https://keras.io/examples/vision/semisupervised_simclr/",
    paper="Chen et al., A Simple Framework for Contrastive Learning of Visual "
    "Representations, ICML 2020",
)
def simclr(*, input_shape=(28, 28, 1), num_classes=10, width=64, temperature=0.2, name="simclr"):
    """SimCLR with a small convolutional encoder and a linear probe.

    Args:
        input_shape: image shape, at least 4x4. Defaults to `(28, 28, 1)`.
        num_classes: classes of the linear probe. Defaults to `10`.
        width: width of the features and projections. Defaults to `64`.
        temperature: the NT-Xent temperature. Defaults to `0.2`.
        name: model name, also the prefix of its layer names. Defaults to `"simclr"`.
    """
    checks.model_name(name)
    return SimCLR(
        input_shape=input_shape,
        num_classes=num_classes,
        width=width,
        temperature=temperature,
        name=name,
    )
