"""What a finished `training.fit` run writes to its output dir, and runs that
tests share."""

RUN_FILES = [
    "config.json",
    "curves.png",
    "history.json",
    "metrics.json",
    "model.keras",
    "model.keras.sha256",
]

# Every recipe option at once, on the bundled digits (but drop_path and cutmix:
# the mlp has no residual blocks, and mixup takes the mixing). float16 rather
# than bfloat16: its LossScaleOptimizer holds state that a resume must carry.
RECIPE = dict(
    epochs=3,
    batch_size=64,
    learning_rate=0.01,
    schedule="cosine",
    warmup_epochs=1,
    weight_decay=0.05,
    label_smoothing=0.1,
    clip_norm=1.0,
    grad_accum_steps=2,
    ema=0.9,
    augment="light",
    mixup=0.2,
    early_stopping=5,
    precision="mixed_float16",
    model_kwargs={"hidden_units": (16,)},
    verbose=0,
)


def interrupt(at=None):
    """A callback that counts the epochs a `fit` runs, and stops it like a
    kill at the end of epoch index `at`, after the callbacks before it and
    before that epoch's checkpoint."""
    import keras

    class Interrupt(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = 0

        def on_epoch_end(self, epoch, logs=None):
            self.epochs += 1
            if epoch == at:
                raise KeyboardInterrupt

    return Interrupt()
