"""What a finished `training.fit` run writes to its output dir, sorted."""

RUN_FILES = [
    "config.json",
    "curves.png",
    "history.json",
    "metrics.json",
    "model.keras",
    "model.keras.sha256",
]


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
