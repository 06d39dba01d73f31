"""What `fit` feeds a model built with pretrained weights, and so what
`evaluate` and `predict` feed it: the weights' normalisation.

Pretrained features expect the inputs they were trained on: pixels in
[0, 1] normalised with the peer's mean and std (`zoo.pretrained.normalize`).
`fit` normalises a data set's images so when its model is a zoo name with
`model_kwargs={"weights": ...}`, or a `.keras` file of a run that did, and
records the mean and std in the run's `config.json` as `normalization`;
`evaluate` and `predict` read it there and normalise their inputs the same
way. The peer's resize and crop (`Weights.preprocess`) are not applied: the
model trains at the data's own size (`image_size` for a folder), and
predicts at it. A data pipeline's batches reach the model as they are.
"""

import dataclasses

import numpy as np

from training.files import ImageFiles
from zoo import pretrained


def for_model(model, model_kwargs, source_run=None) -> dict | None:
    """The normalisation to record and apply for `model` built with
    `model_kwargs`: the weights' entry's for a zoo name with `weights`, the
    source run's (its `config.json`, `source_run`) for a `.keras` file it
    wrote, else `None`."""
    weights = (model_kwargs or {}).get("weights")
    if isinstance(model, str) and weights is not None:
        entry = pretrained.get(model, weights)
        return {"weights": entry.name, "mean": list(entry.mean), "std": list(entry.std)}
    return (source_run or {}).get("normalization")


def describe(normalization, where) -> str:
    """One line saying that inputs are normalised, and how."""
    return (
        f"Normalising inputs as the run in {where} did for its pretrained weights "
        f"{normalization['weights']}: (x - mean) / std on [0, 1] pixels (integers divided "
        f"by 255), mean {tuple(normalization['mean'])}, std {tuple(normalization['std'])}"
    )


def apply(x, normalization):
    """`x` (an array or an `ImageFiles`) normalised; `x` itself without a
    normalisation."""
    if normalization is None:
        return x
    mean, std = normalization["mean"], normalization["std"]
    if isinstance(x, ImageFiles):  # read a batch at a time: normalised as decoded
        return ImageFiles(
            x.paths,
            x.image_size,
            x.channels,
            lambda images: pretrained.normalize(images, mean, std),
        )
    return pretrained.normalize(np.asarray(x), mean, std)


def apply_to_dataset(data, normalization):
    """A `Dataset` with every split's inputs normalised."""
    if normalization is None:
        return data
    splits = ("x_train", "x_val", "x_test")
    return dataclasses.replace(
        data, **{split: apply(getattr(data, split), normalization) for split in splits}
    )
