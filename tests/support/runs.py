"""What a finished `training.fit` run writes to its output dir, sorted."""

RUN_FILES = [
    "config.json",
    "curves.png",
    "history.json",
    "metrics.json",
    "model.keras",
    "model.keras.sha256",
]
