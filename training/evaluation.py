"""`evaluate` and `predict`: a saved model scored on a data set's test split,
or run on inputs.

Beside a `model.keras` that `fit` wrote lies its run's `config.json`, which
says which data the model trained on and how it was split (seed, fractions,
image size). Both read it: without a data set or seed they take the run's,
and say so in one line on stderr; a test split that would hold samples the
model trained on (the same data split with another seed, or data that changed
since) is refused unless `allow_training_data` is on. A run whose model
was built with pretrained weights fed it normalised inputs; both normalise
theirs the same way and say so (see `training.preprocessing`).
"""

import dataclasses
import os
import sys

import keras
import numpy as np

import zoo
from training import outputs, performance, pipeline, preprocessing
from training.config import FitConfig
from training.data import DATASETS, load_dataset
from training.loop import _check_inputs, _match_targets, compile_for_task
from training.steps import CustomStepModel
from zoo import ZooError

# What a data set without a run's config.json is split with: FitConfig's defaults.
_DEFAULT_SPLIT = FitConfig()


@dataclasses.dataclass(frozen=True)
class TestSplit:
    """How to split a data set so that its test split is the one a model
    was tested on.

    Attributes:
        dataset: a data set name or path.
        config: a `FitConfig` with the seed, split fractions and image size.
        run: the run's `config.json`, if the model has one beside it.
        note: one line saying that the run's settings are used, if they are.
    """

    dataset: str
    config: FitConfig
    run: dict | None
    note: str | None = None


def evaluate(
    model_path,
    dataset=None,
    *,
    batch_size=32,
    seed=None,
    image_size=None,
    allow_training_data=False,
) -> dict[str, float]:
    """Evaluates a saved model on a data set's test split.

    Args:
        model_path: a `.keras` file, such as `fit`'s `output_dir/model.keras`.
        dataset: a data set name or path. Defaults to `None`: the one the
            model's run trained on (its `config.json`), else `"digits"`.
        batch_size: samples per step. Defaults to `32`.
        seed: the split seed. Defaults to `None`: the run's, else `0`.
        image_size: the side a folder's images are resized to. Defaults to
            `None`: the run's, else the images' own.
        allow_training_data: score a split that may hold samples the model
            trained on (another seed on the run's data, or the run's data
            changed since). Defaults to `False`.

    Returns:
        `{"test_loss": ..., "test_<metric>": ...}`.

    Raises:
        ZooError: for a model that does not load or does not fit the data, a
            split that would score training data, and a bad `batch_size`.
    """
    _check_batch_size(batch_size)
    net = zoo.load_model(model_path)
    split = test_split(
        model_path, dataset, seed=seed, image_size=image_size, allow=allow_training_data
    )
    data = _load(split, allow_training_data)
    _check_inputs(net, data.x_test, data.name)
    _check_targets(net, data)
    _say(split.note)
    data = dataclasses.replace(data, x_test=_normalized(data.x_test, split.run, model_path))
    data = _match_targets(net, data)
    if not net.compiled:
        compile_for_task(net, None if isinstance(net, CustomStepModel) else data.task, "adam")
    performance.configure(net)
    with performance.kernels():
        results = net.evaluate(
            **pipeline.evaluation_inputs(data.x_test, data.y_test, batch_size),
            verbose=0,
            return_dict=True,
        )
    return {f"test_{k}": float(v) for k, v in results.items()}


def predict(
    model_path,
    x,
    *,
    batch_size=32,
    seed=None,
    image_size=None,
    allow_training_data=False,
) -> np.ndarray:
    """Runs a saved model on inputs.

    Args:
        model_path: a `.keras` file.
        x: an input array, or a data set name or path to predict its test
            split (as `evaluate` splits it).
        batch_size: samples per step. Defaults to `32`.
        seed: with a data set, the split seed. Defaults to `None`: the run's,
            else `0`.
        image_size: with an image folder, the side to resize to. Defaults to
            `None`: the run's, else the images' own.
        allow_training_data: with a data set, as `evaluate`'s. Defaults to
            `False`.
    """
    _check_batch_size(batch_size)
    net = zoo.load_model(model_path)
    if isinstance(x, str | os.PathLike):
        split = test_split(
            model_path, x, seed=seed, image_size=image_size, allow=allow_training_data
        )
        data = _load(split, allow_training_data)
        x, name, run = data.x_test, data.name, split.run
        _check_inputs(net, x, name)
        _say(split.note)
    else:
        run = outputs.read_run_config(model_path)
        x, name = np.asarray(x), "inputs"
        if x.dtype.kind not in "biuf":
            raise ZooError(f"Expected numeric inputs. Received: inputs of dtype {x.dtype}")
        if x.ndim == 0 or len(x) == 0:
            raise ZooError(
                f"Expected at least one input sample. Received: inputs of shape {x.shape}"
            )
        if x.dtype.kind == "f":
            x = x.astype("float32")
    _check_inputs(net, x, name)
    return performance.predict(net, _normalized(x, run, model_path), batch_size=batch_size)


def _normalized(x, run, model_path):
    """`x` normalised as the run's `fit` fed its model (see
    `training.preprocessing`), saying so in one line, where it did."""
    normalization = (run or {}).get("normalization")
    if normalization is None:
        return x
    x = preprocessing.apply(x, normalization)
    where = os.path.join(os.path.dirname(os.fspath(model_path)), "config.json")
    _say(preprocessing.describe(normalization, where))
    return x


def test_split(model_path, dataset=None, *, seed=None, image_size=None, allow=False) -> TestSplit:
    """How to split `dataset` for the model in `model_path`: with its run's
    settings where the model's `config.json` has them.

    Raises:
        ZooError: `seed` differs from the run's for the run's own data and
            `allow` is off, or the run's data cannot be loaded by name.
    """
    run = outputs.read_run_config(model_path)
    if run is None:
        config = dataclasses.replace(
            _DEFAULT_SPLIT, seed=0 if seed is None else seed, image_size=image_size
        )
        return TestSplit(os.fspath(dataset or "digits"), config, None)
    trained_on = run.get("data") or {"name": run.get("dataset")}
    where = os.path.join(os.path.dirname(os.fspath(model_path)), "config.json")
    if dataset is None:
        dataset = trained_on.get("path") or trained_on.get("name")
        if dataset not in DATASETS and "path" not in trained_on:
            raise ZooError(
                f"Expected a data set to test on: the run in {where!r} trained on "
                f"{trained_on.get('name')!r}, which is not a data set name or path. "
                "Received: dataset=None"
            )
    dataset = os.fspath(dataset)
    if dataset == trained_on.get("name") and dataset in DATASETS:
        _check_seed(seed, run, dataset, where, allow)
    config = dataclasses.replace(
        _DEFAULT_SPLIT,
        seed=run["seed"] if seed is None else seed,
        validation_fraction=run.get("validation_fraction", _DEFAULT_SPLIT.validation_fraction),
        test_fraction=run.get("test_fraction", _DEFAULT_SPLIT.test_fraction),
        image_size=run.get("image_size") if image_size is None else image_size,
    )
    size = f", image size {config.image_size}" if config.image_size else ""
    note = f"Using the run's settings in {where}: data set {dataset!r}, seed {config.seed}{size}"
    return TestSplit(dataset, config, run, note)


def _load(split, allow):
    """Loads the split's data set, refusing a changed or re-split copy of the
    run's own files."""
    config = split.config
    data = load_dataset(
        split.dataset,
        seed=config.seed,
        validation_fraction=config.validation_fraction,
        test_fraction=config.test_fraction,
        image_size=config.image_size,
    )
    trained_on = (split.run or {}).get("data") or {}
    fingerprint = (data.source or {}).get("fingerprint")
    if fingerprint and fingerprint == trained_on.get("fingerprint"):
        _check_seed(config.seed, split.run, split.dataset, "its config.json", allow)
    elif (
        fingerprint
        and not allow
        and trained_on.get("path")
        and os.path.abspath(split.dataset) == trained_on["path"]
    ):
        raise ZooError(
            f"Refusing to test on {split.dataset!r}: it has changed since the model trained on "
            f"it ({trained_on.get('fingerprint')}; now {fingerprint}), so its test split may "
            "hold samples the model trained on. Pass allow_training_data=True "
            "(--allow-training-data) to score it anyway"
        )
    return data


def _say(note):
    if note:
        print(note, file=sys.stderr)


def _check_seed(seed, run, dataset, where, allow):
    if seed is None or seed == run["seed"] or allow:
        return
    raise ZooError(
        f"Refusing to test on {dataset!r} split with seed {seed}: the model trained on it split "
        f"with seed {run['seed']} ({where}), and another seed's test split holds samples it "
        "trained on. Leave the seed out to use the run's, or pass allow_training_data=True "
        "(--allow-training-data) to score it anyway"
    )


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ZooError(
            f"Expected batch_size to be a positive int. Received: batch_size={batch_size!r}"
        )


def _check_targets(net, data):
    """Refuses data whose targets the model's outputs cannot be scored
    against: a classifier on per-pixel labels, say."""
    if isinstance(net, CustomStepModel):
        return
    try:
        outputs = tuple(net.output_shape)
    except (AttributeError, ValueError):
        return
    labels = data.y_test
    if data.num_classes is None:
        fits = len(outputs) - 1 in (labels.ndim - 1, labels.ndim)
    else:
        axis = -1
        if len(outputs) == 4 and keras.config.image_data_format() == "channels_first":
            axis = 1
        fits = len(outputs) == labels.ndim + 1 and (
            outputs[axis] is None or outputs[axis] == 1 or outputs[axis] >= data.num_classes
        )
    if not fits:
        what = "float targets" if data.num_classes is None else f"{data.num_classes} classes"
        raise ZooError(
            f"Model {net.name!r} has outputs of shape {outputs}, which cannot be scored against "
            f"the targets of {data.name!r} (of shape {labels.shape[1:]}, {what}). Expected a "
            "data set of the model's task"
        )
