"""`fit`, `evaluate` and `predict`: the library the CLI is a thin layer over."""

import dataclasses
import os

import keras
import numpy as np

import zoo
from training import callbacks, checkpoints, distribute, outputs, performance
from training.config import FitConfig
from training.data import Dataset, from_arrays, load_dataset
from training.seeding import make_deterministic, seed_everything
from zoo import ZooError
from zoo.steps import CustomStepModel

# Loss and metrics per task, for a model `net`. Zoo classifiers return logits;
# binary ones a probability.
_OBJECTIVES = {
    "classification": lambda net: (
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    ),
    "binary_classification": lambda net: (
        keras.losses.BinaryCrossentropy(),
        [keras.metrics.BinaryAccuracy(name="accuracy")],
    ),
    "regression": lambda net: (
        keras.losses.MeanSquaredError(),
        [keras.metrics.MeanAbsoluteError(name="mae")],
    ),
    "segmentation": lambda net: _segmentation_objective(net),
}
_OBJECTIVES["language_modeling"] = _OBJECTIVES["classification"]  # per position


def _segmentation_objective(net):
    """Per-pixel cross-entropy and mean IoU over the logits' channel axis."""
    axis = -1 if keras.config.image_data_format() == "channels_last" else 1
    return (
        keras.losses.SparseCategoricalCrossentropy(from_logits=True, axis=axis),
        [
            keras.metrics.MeanIoU(
                num_classes=net.output_shape[axis],
                sparse_y_pred=False,
                axis=axis,
                name="mean_iou",
            )
        ],
    )


def _labelled(data):
    return data.num_classes is not None


# Per task: what its data must hold, and the check.
_DATA_FOR_TASK = {
    "classification": ("integer class labels", _labelled),
    "binary_classification": ("labels 0 and 1", lambda d: _labelled(d) and d.num_classes <= 2),
    "regression": ("float targets", lambda d: not _labelled(d)),
    "language_modeling": (
        "a next-token target at every position",
        lambda d: _labelled(d) and d.y_train.ndim == 2,
    ),
    "segmentation": ("a class label per pixel", lambda d: d.task == "segmentation"),
    "generative": ("images (labels are ignored)", lambda d: True),
    "distillation": ("integer class labels", _labelled),
    "self_supervised": ("integer class labels for its linear probe", _labelled),
}


@dataclasses.dataclass
class FitResult:
    """What `fit` returns: the trained model, its history and test metrics."""

    model: keras.Model
    history: dict[str, list[float]]
    metrics: dict[str, float]
    output_dir: str | None


def fit(model="simple_cnn", dataset="digits", *, keras_callbacks=(), **options) -> FitResult:
    """Trains a model on a data set and evaluates it on the held-out test split.

    Args:
        model: a zoo model name, built for the data's input shape and class
            count, or a `keras.Model` (used as compiled, if it is).
            Defaults to `"simple_cnn"`.
        dataset: a data set name, a `training.Dataset`, or an `(x, y)` pair of
            arrays to split. Defaults to `"digits"`.
        keras_callbacks: more `keras.callbacks.Callback`s for `model.fit`.
            Defaults to `()`.
        **options: fields of `FitConfig`: `epochs`, `batch_size`, `optimizer`,
            `learning_rate`, `seed`, `output_dir`, `overwrite`, `tensorboard`,
            `model_kwargs`, `verbose`, `distribute`, `devices` and the split
            fractions.

    Returns:
        A `FitResult`; its `metrics` hold `test_loss` and, for classifiers,
        `test_accuracy`.

    Example:

    >>> result = training.fit("mlp", "digits", epochs=5, output_dir="runs/mlp")
    >>> result.metrics["test_accuracy"]
    """
    config = FitConfig.from_options(**options)
    if config.distribute and distribute.active() is None:
        # The whole run happens on the replicas: the model is built, compiled,
        # trained and tested there.
        _check_distributable(model)
        with distribute.data_parallel(config.devices):
            return fit(model, dataset, **options)
    if isinstance(model, str):
        zoo.model_task(model)  # an unknown name fails before any work
    if config.tensorboard and not config.output_dir:
        raise ZooError("Expected an output_dir for tensorboard=True. Received: output_dir=None")
    if config.deterministic:
        make_deterministic()
    seed_everything(config.seed)
    data = _dataset(dataset, config)
    if config.batch_size > len(data.x_train):
        raise ZooError(
            f"Expected batch_size at most the {len(data.x_train)} training samples "
            f"of {data.name!r}. Received: batch_size={config.batch_size}"
        )
    # Every data-parallel process resumes from the chief's checkpoint.
    resumed = config.output_dir and checkpoints.load(config.output_dir, config)
    if resumed:
        net, task = resumed.net, _task(model, data)
    else:
        net, task = _model(model, data, config.model_kwargs)
    # Only once the arguments are known good: a mistake leaves no dir behind.
    output_dir = config.output_dir and outputs.prepare_dir(
        distribute.run_dir(config.output_dir), overwrite=config.overwrite
    )
    if task in _OBJECTIVES:
        data = _match_targets(net, data)
    if not resumed:
        _prepare_training(net, task, data, config)
    elif task in _OBJECTIVES:
        performance.configure(net)  # run-time settings are not saved with a model

    with performance.kernels():
        history = _train(net, task, data, config, output_dir, resumed, keras_callbacks)
    metrics = _test_metrics(net, data, config.batch_size)
    if output_dir:
        _write_run(output_dir, net, data, config, history, metrics)
        checkpoints.remove(output_dir)
    return FitResult(net, history, metrics, output_dir if distribute.is_chief() else None)


def _prepare_training(net, task, data, config):
    """Freezes, pre-trains a teacher and compiles, as the config and model ask."""
    if config.freeze_backbone:
        freeze_backbone(net)
    if getattr(net, "teacher_trained", True) is False:
        _train_teacher(net, data, config)
    if not net.compiled:
        recommended = net.default_optimizer() if hasattr(net, "default_optimizer") else None
        compile_for_task(net, task, config.make_optimizer(recommended))


def _train(net, task, data, config, output_dir, resumed, keras_callbacks):
    """Trains epoch by epoch, from a `resumed` checkpoint if any, checkpointing
    after each epoch.

    Each epoch's order is drawn from `(seed, epoch)`, not from a global random
    state, so a run resumed from a checkpoint sees the batches an
    uninterrupted run would have.
    """
    start_epoch, history = (resumed.epoch, resumed.history) if resumed else (0, {})
    nan_stop = callbacks.StopOnNaN()
    verbose = config.verbose if distribute.is_chief() else 0
    extra = [nan_stop, *distribute.callbacks(), *keras_callbacks]
    if verbose != 0:
        extra.append(callbacks.RunProgress(config.epochs))
    if resumed:
        extra.append(callbacks.RestoreGlobalRNG(resumed.global_rng_state))
    if config.tensorboard:
        extra.append(callbacks.tensorboard(os.path.join(output_dir, "tensorboard")))
    if task == "generative" and output_dir:
        extra.append(callbacks.SampleGrid(output_dir, seed=config.seed))
    for epoch in range(start_epoch, config.epochs):
        inputs = distribute.fit_inputs(data, config.batch_size, config.seed, epoch)
        epoch_history = net.fit(
            **performance.feed(inputs),
            initial_epoch=epoch,
            epochs=epoch + 1,
            callbacks=performance.callback_list(
                extra, net, inputs, epochs=epoch + 1, verbose=verbose
            ),
            verbose=verbose,
        )
        if nan_stop.stopped_at:
            where = (
                f"the last good checkpoint (after epoch {epoch}) is in "
                f"{os.path.join(output_dir, checkpoints.DIRNAME)}"
                if output_dir and epoch
                else "no checkpoint was written"
            )
            raise ZooError(
                f"Training stopped: the loss became {nan_stop.value} at epoch {epoch + 1}, "
                f"{nan_stop.steps}; {where}. Expected a finite loss: try a lower "
                "learning rate or check the data"
            )
        for key, values in epoch_history.history.items():
            history.setdefault(key, []).extend(float(v) for v in values)
        if output_dir:
            checkpoints.save(output_dir, net, epoch=epoch + 1, history=history, config=config)
    return history


def evaluate(model_path, dataset="digits", *, batch_size=32, seed=0) -> dict[str, float]:
    """Evaluates a saved model on a data set's test split.

    Args:
        model_path: a `.keras` file, such as `fit`'s `output_dir/model.keras`.
        dataset: a data set name, a `training.Dataset` or an `(x, y)` pair.
            Defaults to `"digits"`.
        batch_size: samples per step. Defaults to `32`.
        seed: the split seed; use the one the model was trained with so the
            test split is the held-out one. Defaults to `0`.

    Returns:
        `{"test_loss": ..., "test_<metric>": ...}`.
    """
    net = zoo.load_model(model_path)
    data = _dataset(dataset, FitConfig(seed=seed, batch_size=batch_size))
    _check_inputs(net, data.x_test, data.name)
    data = _match_targets(net, data)
    if not net.compiled:
        compile_for_task(net, None if isinstance(net, CustomStepModel) else data.task, "adam")
    return _test_metrics(net, data, batch_size)


def predict(model_path, x, *, batch_size=32) -> np.ndarray:
    """Runs a saved model on inputs.

    Args:
        model_path: a `.keras` file.
        x: an input array, or a data set name to predict its test split.
        batch_size: samples per step. Defaults to `32`.
    """
    net = zoo.load_model(model_path)
    if isinstance(x, str):
        x, name = load_dataset(x).x_test, x
    else:
        x, name = np.asarray(x), "inputs"
        if x.dtype.kind not in "biuf":
            raise ZooError(f"Expected numeric inputs. Received: inputs of dtype {x.dtype}")
        if x.dtype.kind == "f":
            x = x.astype("float32")
    _check_inputs(net, x, name)
    return performance.predict(net, x, batch_size=batch_size)


def compile_for_task(net, task, optimizer) -> None:
    """Compiles `net` with the loss and metrics of a `zoo.TASKS` task.

    Models with a custom training step (`task` of `None` or one not in
    `_OBJECTIVES`) carry their own losses and metrics and take only the
    optimizer (copied for each of their optimizer groups).
    """
    if task not in _OBJECTIVES:
        net.compile(optimizer=optimizer)
        return
    loss, metrics = _OBJECTIVES[task](net)
    net.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    performance.configure(net)


def freeze_backbone(net) -> keras.Layer:
    """Freezes every layer of `net` but its head, the last layer with weights.

    Frozen BatchNorm layers run in inference mode, so their statistics stay as
    they are (Keras' fine-tuning semantics).

    Returns:
        The head, the only layer left trainable.
    """
    weighted = [layer for layer in getattr(net, "layers", []) if layer.weights]
    head = weighted[-1] if weighted else None
    if isinstance(net, CustomStepModel) or not isinstance(
        head, (keras.layers.Dense, keras.layers.EinsumDense, keras.layers.Conv2D)
    ):
        raise ZooError(
            f"Expected a model ending in a dense or convolutional head to freeze the "
            f"backbone of. Received: {net.name!r} ending in "
            f"{type(head).__name__ if head else 'no layer with weights'}"
        )
    for layer in weighted[:-1]:
        layer.trainable = False
    return head


def _train_teacher(distiller, data, config):
    """Trains a distiller's untrained teacher on the same data, then freezes it."""
    teacher = distiller.teacher
    teacher.trainable = True
    compile_for_task(teacher, "classification", config.make_optimizer())
    for epoch in range(config.epochs):
        teacher.fit(
            **distribute.fit_inputs(data, config.batch_size, config.seed, epoch),
            initial_epoch=epoch,
            epochs=epoch + 1,
            callbacks=distribute.callbacks(),
            verbose=config.verbose if distribute.is_chief() else 0,
        )
    teacher.trainable = False
    distiller.teacher_trained = True


def _check_distributable(model):
    if not isinstance(model, str):
        raise ZooError(
            "Expected a zoo model name for distribute='data', to build on the replicas. "
            f"Received: model of type {type(model).__name__}"
        )


def _dataset(dataset, config) -> Dataset:
    splits = dict(
        seed=config.seed,
        validation_fraction=config.validation_fraction,
        test_fraction=config.test_fraction,
    )
    if isinstance(dataset, Dataset):
        return dataset
    if isinstance(dataset, str):
        return load_dataset(dataset, **splits)
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        return from_arrays(*dataset, **splits)
    raise ZooError(
        "Expected dataset to be a data set name, a training.Dataset or an (x, y) "
        f"pair of arrays. Received: dataset of type {type(dataset).__name__}"
    )


def _task(model, data):
    """The task `model` (a name or a model) is trained for on `data`."""
    if isinstance(model, CustomStepModel):
        return None
    return data.task if isinstance(model, keras.Model) else zoo.model_task(model)


def _model(model, data, model_kwargs):
    """Returns `(model, task)`, building a zoo model for the data."""
    if isinstance(model, CustomStepModel):
        return model, None  # its own step holds its losses
    if isinstance(model, keras.Model):
        _check_inputs(model, data.x_train, data.name)
        return model, data.task
    task = zoo.model_task(model)
    expected, fits = _DATA_FOR_TASK[task]
    if not fits(data):
        received = "float targets" if data.num_classes is None else f"{data.num_classes} classes"
        raise ZooError(
            f"Model {model!r} is for {task.replace('_', ' ')} and expects {expected}. "
            f"Received: data set {data.name!r} with {received}"
        )
    kwargs = {"input_shape": data.input_shape, **model_kwargs}
    if task in ("classification", "segmentation", "distillation", "self_supervised"):
        kwargs.setdefault("num_classes", data.num_classes)
    if "vocab_size" in zoo.model_arguments(model):
        tokens = (data.x_train, data.x_val, data.x_test) + (
            (data.y_train,) if task == "language_modeling" else ()
        )
        kwargs.setdefault("vocab_size", int(max(t.max() for t in tokens)) + 1)
    return zoo.create_model(model, **kwargs), task


def _match_targets(net, data):
    """Gives a one-unit classifier its labels as a float column.

    Binary metrics do not squeeze: `(N,)` labels against `(N, 1)` probabilities
    broadcast to `(N, N)` and give a meaningless accuracy.
    """
    if (
        isinstance(net, CustomStepModel)
        or data.task != "classification"
        or net.output_shape[-1] != 1
    ):
        return data
    column = {
        split: getattr(data, split).reshape(-1, 1).astype("float32")
        for split in ("y_train", "y_val", "y_test")
    }
    return dataclasses.replace(data, **column)


def _check_inputs(net, x, name):
    try:
        expected = tuple(net.input_shape[1:])
    except (AttributeError, ValueError):
        return  # a subclassed model declares no input shape; it checks its own
    received = tuple(x.shape[1:])
    if len(expected) != len(received) or any(
        e is not None and e != r for e, r in zip(expected, received, strict=True)
    ):
        raise ZooError(
            f"Model {net.name!r} expects inputs of shape {expected}. "
            f"Received: {name} with inputs of shape {received}"
        )


def _test_metrics(net, data, batch_size):
    with performance.kernels():
        results = net.evaluate(
            **distribute.evaluation_inputs(data.x_test, data.y_test, batch_size),
            verbose=0,
            return_dict=True,
        )
    return {f"test_{k}": float(v) for k, v in results.items()}


def _write_run(output_dir, net, data, config, history, metrics):
    outputs.save_model(net, os.path.join(output_dir, "model.keras"))
    outputs.write_json(os.path.join(output_dir, "history.json"), history)
    outputs.write_json(
        os.path.join(output_dir, "config.json"),
        {
            "model": net.name,
            "dataset": data.name,
            "backend": keras.backend.backend(),
            "keras_version": keras.__version__,
            **config.to_dict(),
        },
    )
    outputs.plot_history(
        history,
        os.path.join(output_dir, "curves.png"),
        title=f"{net.name} on {data.name} ({keras.backend.backend()})",
    )
    # Written last: its presence marks the run as finished.
    outputs.write_json(os.path.join(output_dir, outputs.FINISHED_MARKER), metrics)
