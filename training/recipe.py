"""The standard training recipe, made of Keras' own pieces: the learning-rate
schedule and the optimizer's arguments, and image classifiers' augmentation,
mixup and cutmix.

`FitConfig` holds the choices; `training.fit` asks here what they mean.
Where `FitConfig` leaves a detail open, it is timm's `train.py`'s.
"""

import keras
import numpy as np

from zoo import ZooError

# Where a warmup starts, as timm's `--warmup-lr` (or at the learning rate, if lower).
WARMUP_START = 1e-5
# `schedule="step"`: the learning rate is multiplied by this after each
# milestone, at a third and two thirds of the epochs (torchvision's reference
# recipe: 0.1 at epochs 30 and 60 of 90).
STEP_DECAY = 0.1
# With both mixup and cutmix, the share of batches that take cutmix (timm's
# `--mixup-switch-prob`).
CUTMIX_SHARE = 0.5


def learning_rate(config, base, steps_per_epoch):
    """The learning rate `config` asks for, from `base`: a float, or a
    `keras.optimizers.schedules.LearningRateSchedule` of the optimizer's step
    (batches trained so far)."""
    warmup = config.warmup_epochs * steps_per_epoch
    if config.schedule == "step":
        return _step_schedule(config, base, steps_per_epoch)
    if config.schedule == "constant" and not warmup:
        return base
    # A cosine decay to `alpha * base`: `alpha` 1 holds the rate constant.
    alpha = 1.0 if config.schedule == "constant" else config.min_learning_rate / base
    decay_steps = max(1, config.epochs * steps_per_epoch - warmup)
    if not warmup:
        return keras.optimizers.schedules.CosineDecay(base, decay_steps, alpha=alpha)
    return keras.optimizers.schedules.CosineDecay(
        min(WARMUP_START, base),
        decay_steps,
        alpha=alpha,
        warmup_target=base,
        warmup_steps=warmup,
    )


def epoch_learning_rates(config, base):
    """`schedule="step"`'s rate in each epoch: timm's per-epoch warmup from
    `WARMUP_START`, then `STEP_DECAY` at each milestone, floored at
    `min_learning_rate`."""
    start = min(WARMUP_START, base)
    milestones = (round(config.epochs / 3), round(2 * config.epochs / 3))
    rates = []
    for epoch in range(config.epochs):
        if epoch < config.warmup_epochs:
            rates.append(start + (base - start) * epoch / config.warmup_epochs)
        else:
            decays = sum(epoch >= m for m in milestones if m > 0)
            rates.append(max(base * STEP_DECAY**decays, config.min_learning_rate))
    return rates


def _step_schedule(config, base, steps_per_epoch):
    rates = epoch_learning_rates(config, base)
    changes = [e for e in range(1, len(rates)) if rates[e] != rates[e - 1]]
    if not changes:
        return base
    # PiecewiseConstantDecay takes `values[i]` while `step <= boundaries[i]`.
    boundaries = [e * steps_per_epoch - 1 for e in changes]
    values = [rates[0], *(rates[e] for e in changes)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def optimizer_arguments(config, base, steps_per_epoch) -> dict:
    """The Keras optimizer arguments of `config`'s recipe, for a base rate
    `base` and `steps_per_epoch` batches an epoch."""
    arguments = {"learning_rate": learning_rate(config, base, steps_per_epoch)}
    if config.weight_decay:
        arguments["weight_decay"] = config.weight_decay
    if config.clip_norm is not None:
        arguments["global_clipnorm"] = config.clip_norm
    if config.grad_accum_steps > 1:
        arguments["gradient_accumulation_steps"] = config.grad_accum_steps
    if config.ema is not None:
        arguments.update(use_ema=True, ema_momentum=config.ema)
    return arguments


def spared_from_weight_decay(net) -> list:
    """The trainable variables of `net` that weight decay leaves as they are,
    as timm's `param_groups_weight_decay` does: biases, those of one axis or
    none (normalisation weights) and those a layer names in its
    `no_weight_decay()` (ViT's class token and position embedding).

    Biases go by name: attention's query, key and value biases have an axis
    per head in Keras, where timm's are one vector."""
    named = {
        id(variable)
        for layer in _layers(net)
        if hasattr(layer, "no_weight_decay")
        for variable in layer.no_weight_decay()
    }
    return [
        v
        for v in net.trainable_variables
        if v.name == "bias" or len(v.shape) <= 1 or id(v) in named
    ]


def spare_from_weight_decay(net) -> None:
    """Excludes `spared_from_weight_decay(net)` from the weight decay of the
    optimizer `net` is compiled with.

    Keras takes the exclusion only before the optimizer is built, and does not
    save it. An optimizer loaded with its model (a resumed run's) is built:
    the model is compiled again from its compile config, as Keras' loading
    does, and the new optimizer, built with the exclusion, takes the loaded
    one's state.
    """
    if not any(member.weight_decay for member in _decaying(net.optimizer)):
        return
    state = None
    if net.optimizer.built:
        state = [keras.ops.convert_to_numpy(v) for v in net.optimizer.variables]
        net.compile(**keras.saving.deserialize_keras_object(net.get_compile_config()))
    spared = spared_from_weight_decay(net)
    for member in _decaying(net.optimizer):
        member.exclude_from_weight_decay(var_list=spared)
    if state is not None:
        net.optimizer.build(net.trainable_variables)
        for variable, value in zip(net.optimizer.variables, state, strict=True):
            variable.assign(value)


def _decaying(optimizer) -> list:
    """The optimizers that apply weight decay for `optimizer`: those it wraps
    (`LossScaleOptimizer`) or groups (`zoo.steps.OptimizerGroup`), else itself."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return [optimizer.inner_optimizer]
    return list(getattr(optimizer, "optimizers", [optimizer]))


def _layers(layer):
    """`layer` and every layer inside it."""
    yield layer
    for inner in getattr(layer, "layers", []):
        yield from _layers(inner)


def soft_targets(config) -> bool:
    """Whether classifiers train on one-hot (smoothed or mixed) targets."""
    return bool(config.label_smoothing or config.mixup or config.cutmix)


def augments(config) -> bool:
    return config.augment != "none" or bool(config.mixup or config.cutmix)


def check_augmentation(config, task, data) -> None:
    """Refuses in one line the recipe options the task or data cannot take."""
    if soft_targets(config) and task != "classification":
        raise ZooError(
            "Expected a classifier for label_smoothing, mixup and cutmix. Received: a model "
            f"for {(task or 'a custom step').replace('_', ' ')}"
        )
    if augments(config) and (task != "classification" or len(data.input_shape) != 3):
        raise ZooError(
            "Expected an image classifier (images of 3 axes) for augment, mixup and cutmix. "
            f"Received: a model for {(task or 'a custom step').replace('_', ' ')} on inputs "
            f"of shape {data.input_shape}"
        )


class Augmentation:
    """Transforms a training batch `(x, y)` as `config` asks, with Keras'
    augmentation layers, drawn from `(seed, epoch, batch)` alone: a resumed
    run augments each batch as an uninterrupted one does.

    Images are taken to be in [0, 1], as `training.load_dataset` gives them;
    `y` is one-hot where mixup or cutmix is on.
    """

    def __init__(self, config, image_size):
        self.config = config
        self.image_size = image_size

    def __call__(self, x, y, key):
        seed = int(np.random.default_rng(key).integers(2**31 - 1))
        if self.config.augment != "none":
            x = _pad(x, keras.config.image_data_format() == "channels_last")
        data = {"images": x, "labels": y}
        for layer in self.layers(seed):
            data = _cutmix(layer, data) if isinstance(layer, keras.layers.CutMix) else layer(data)
        return tuple(keras.ops.convert_to_numpy(data[k]) for k in ("images", "labels"))

    def layers(self, seed) -> list:
        """The layers for a batch, seeded with `seed`, for images padded by
        an eighth of each side where `augment` is on."""
        config = self.config
        layers = []
        if config.augment != "none":
            height, width = self.image_size
            layers += [
                keras.layers.RandomCrop(height, width, seed=seed),
                keras.layers.RandomFlip("horizontal", seed=seed),
            ]
        if config.augment == "randaugment":
            layers.append(keras.layers.RandAugment(value_range=(0, 1), seed=seed))
        mixing = []
        if config.mixup:
            mixing.append(keras.layers.MixUp(alpha=config.mixup, seed=seed))
        if config.cutmix:
            # A factor range of one value is cutmix's alpha itself.
            mixing.append(keras.layers.CutMix(factor=(config.cutmix,) * 2, seed=seed))
        if len(mixing) == 2:
            mixing = [mixing[int(np.random.default_rng(seed).random() < CUTMIX_SHARE)]]
        return layers + mixing


def _cutmix(layer, data):
    """Keras' CutMix, its targets mixed by the share of pixels pasted, as
    timm's `correct_lam` does: Keras mixes them by the box's unrounded area,
    which on small images is far from the pixels'."""
    transformation = layer.get_random_transformation(data, training=True)
    pasted = keras.ops.cast(transformation["batch_masks"], "float32")
    transformation["mix_weight"] = 1.0 - keras.ops.mean(pasted, axis=(1, 2, 3))
    return {
        "images": layer.transform_images(data["images"], transformation),
        "labels": layer.transform_labels(data["labels"], transformation),
    }


def _pad(x, channels_last):
    """Pads images by an eighth of each side with zeros, for a random crop
    back to their size (torchvision's CIFAR recipe pads 32 by 4)."""
    axes = (1, 2) if channels_last else (2, 3)
    widths = [(0, 0)] * x.ndim
    for axis in axes:
        widths[axis] = (max(1, x.shape[axis] // 8),) * 2
    return np.pad(x, widths)
