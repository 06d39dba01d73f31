"""`fit`: the library the CLI is a thin layer over.

A run reads top to bottom: the data (`training.data`, `training.files`), the
model built for it or resumed from a checkpoint (`training.checkpoints`), the
run's callbacks (`training.callbacks.for_run`) and batches
(`training.pipeline`), one `model.fit` call, and the run's files
(`training.outputs`). `training.evaluation` scores and runs saved models.
"""

import dataclasses
import os

import keras
import numpy as np

import zoo
from training import (
    callbacks,
    checkpoints,
    distribute,
    outputs,
    performance,
    pipeline,
    preprocessing,
    recipe,
    sharing,
)
from training.config import FitConfig
from training.data import Dataset, fingerprint_arrays, from_arrays, load_dataset
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


# Tasks whose models take their class count from the data.
_CLASSES_FROM_DATA = ("classification", "segmentation", "distillation", "self_supervised")


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


def fit(
    model="simple_cnn",
    dataset="digits",
    *,
    validation_data=None,
    test_data=None,
    keras_callbacks=(),
    **options,
) -> FitResult:
    """Trains a model on a data set and evaluates it on the held-out test split.

    The run is one call of Keras' `model.fit`, from the epoch a checkpoint in
    `output_dir` resumes at (if any) to `epochs`, so Keras callbacks behave
    as under a plain `model.fit`.

    Args:
        model: a zoo model name, built for the data's input shape and class
            count; a path to a `.keras` file (a finished run's
            `model.keras`), loaded to train further; or a `keras.Model`. A
            compiled model trains as compiled, its optimizer state included
            (its weight decay sparing what the recipe's spares), unless
            `optimizer`, `learning_rate` or `freeze_backbone` is given.
            Defaults to `"simple_cnn"`.
        dataset: a data set name or path (see `training.load_dataset`), a
            `training.Dataset`, an `(x, y)` pair of arrays to split, or a
            pipeline that `model.fit` takes as it is: a
            `keras.utils.PyDataset`, a `tf.data.Dataset`, a
            `torch.utils.data.DataLoader` or a grain loader.
            Defaults to `"digits"`.
        validation_data: with a pipeline, its validation data (a pipeline or
            an `(x, y)` pair), if any. Defaults to `None`.
        test_data: with a pipeline, the data to compute the test metrics on,
            if any. Defaults to `None`.
        keras_callbacks: more `keras.callbacks.Callback`s for `model.fit`.
            Defaults to `()`.
        **options: fields of `FitConfig`: `epochs`, `batch_size`, `optimizer`,
            `learning_rate`, `seed`, `output_dir`, `overwrite`, `tensorboard`,
            `model_kwargs`, `image_size`, `verbose`, `distribute`, `devices`
            and the split fractions.

    Returns:
        A `FitResult`; its `metrics` hold `test_loss` and, for classifiers,
        `test_accuracy` (none for a pipeline without `test_data`).

    Example:

    >>> result = training.fit("mlp", "digits", epochs=5, output_dir="runs/mlp")
    >>> result.metrics["test_accuracy"]
    """
    config = FitConfig.from_options(**options)
    # Before anything starts the framework on its devices (data parallelism does).
    sharing.share_gpu_memory(config.gpu_memory)
    sharing.set_threads()
    if config.distribute and distribute.active() is None:
        # The whole run happens on the replicas: the model is built, compiled,
        # trained and tested there.
        _check_distributable(model, dataset)
        with distribute.data_parallel(config.devices):
            return fit(
                model,
                dataset,
                validation_data=validation_data,
                test_data=test_data,
                keras_callbacks=keras_callbacks,
                **options,
            )
    model, model_source = _model_source(model)  # an unknown name fails before any work
    replicas = distribute.active()
    if replicas and config.grad_accum_steps > 1 and not replicas.accumulates_gradients:
        raise ZooError(
            f"Expected grad_accum_steps=1 for distribute='data' on {keras.backend.backend()}, "
            "whose replicas cannot run Keras' gradient accumulation (keras-team/keras#20582). "
            f"Received: grad_accum_steps={config.grad_accum_steps}"
        )
    if config.tensorboard and not config.output_dir:
        raise ZooError("Expected an output_dir for tensorboard=True. Received: output_dir=None")
    if config.deterministic:
        make_deterministic()
    seed_everything(config.seed)

    # The data, and the model trained on it (a checkpoint's, when resuming).
    data = _dataset(dataset, config, validation_data, test_data)
    if isinstance(data, Dataset) and config.batch_size > len(data.x_train):
        raise ZooError(
            f"Expected batch_size at most the {len(data.x_train)} training samples "
            f"of {data.name!r}. Received: batch_size={config.batch_size}"
        )
    run = {"model_source": model_source, "data": _describe_data(data)}
    # Pretrained features see the inputs they were trained on (a pipeline's
    # batches go in as they are); evaluate and predict read this from config.json.
    normalization = None
    if isinstance(data, Dataset):
        source_run = "path" in model_source and outputs.read_run_config(model_source["path"])
        normalization = preprocessing.for_model(model, config.model_kwargs, source_run)
    if normalization:
        run["normalization"] = normalization
    # Every data-parallel process resumes from the chief's checkpoint.
    resumed = config.output_dir and checkpoints.load(config.output_dir, config, run)
    if resumed:
        net, task = resumed.net, _task(model, data)
    else:
        with zoo.saving.dtype_policy(config.precision):
            net, task = _model(model, data, _model_kwargs(model, config))
        _check_precision(net, config.precision)
    if normalization:
        data = preprocessing.apply_to_dataset(data, normalization)
    recipe.check_augmentation(config, task, data)
    if config.early_stopping and (isinstance(data, pipeline.Stream) and data.validation is None):
        raise ZooError(
            "Expected validation data for early_stopping, which watches the validation "
            "loss. Received: a data pipeline without validation_data"
        )
    # Only once the arguments are known good: a mistake leaves no dir behind.
    output_dir = config.output_dir and outputs.prepare_dir(
        distribute.run_dir(config.output_dir), overwrite=config.overwrite, resuming=bool(resumed)
    )
    if task in _OBJECTIVES:
        data = _match_targets(net, data, soft=recipe.soft_targets(config))
    epoch = resumed.epoch if resumed else 0
    inputs = pipeline.training_inputs(
        data,
        config.batch_size,
        seed=config.seed,
        epoch=epoch,
        augment=recipe.Augmentation(config, _image_size(data)) if recipe.augments(config) else None,
    )
    if not resumed:
        _prepare_training(net, task, data, config, inputs.steps)
    else:
        recipe.spare_from_weight_decay(net)  # not saved with the optimizer
        if task in _OBJECTIVES:
            performance.configure(net)  # run-time settings are not saved with a model

    # The callbacks and the one `model.fit` call.
    run_callbacks, nan_stop = callbacks.for_run(
        config,
        user=list(keras_callbacks),
        data=inputs.callbacks,
        output_dir=output_dir,
        run=run,
        resumed=resumed,
        generative=hasattr(net, "generate"),
    )
    if resumed:
        checkpoints.rewind_files(keras_callbacks, resumed.callback_states)
    # A run that a callback (EarlyStopping) ended trains no further epochs.
    epochs = epoch if resumed and resumed.stopped else config.epochs
    with performance.kernels():
        trained = net.fit(
            **inputs.arguments,
            initial_epoch=epoch,
            epochs=epochs,
            callbacks=performance.callback_list(
                run_callbacks, net, steps=inputs.steps, epochs=epochs, verbose=_verbosity(config)
            ),
            verbose=_verbosity(config),
        )
    if nan_stop.stopped_at:
        raise ZooError(_nan_message(nan_stop, output_dir))
    history = {key: list(values) for key, values in (resumed.history if resumed else {}).items()}
    for key, values in trained.history.items():
        history[key] = [*history.get(key, []), *(float(v) for v in values)]

    # The test metrics and the run's files.
    metrics = _test_metrics(net, data, config.batch_size)
    if output_dir:
        _write_run(output_dir, net, data, config, history, metrics, run)
        checkpoints.remove(output_dir)
    return FitResult(net, history, metrics, output_dir if distribute.is_chief() else None)


def _verbosity(config):
    return config.verbose if distribute.is_chief() else 0


def _nan_message(nan_stop, output_dir):
    epoch = nan_stop.epoch
    where = (
        f"the last good checkpoint (after epoch {epoch}) is in "
        f"{os.path.join(output_dir, checkpoints.DIRNAME)}"
        if output_dir and epoch
        else "no checkpoint was written"
    )
    return (
        f"Training stopped: the loss became {nan_stop.value} at epoch {epoch + 1}, "
        f"{nan_stop.steps}; {where}. Expected a finite loss: try a lower "
        "learning rate or check the data"
    )


def _prepare_training(net, task, data, config, steps_per_epoch):
    """Freezes, pre-trains a teacher and compiles, as the config and model ask.

    A compiled model keeps its compilation (and optimizer state) unless the
    config asks for another optimizer, learning rate, recipe or a frozen
    backbone; its weight decay spares what the recipe's does.
    """
    if config.freeze_backbone:
        freeze_backbone(net)
    if getattr(net, "teacher_trained", True) is False:
        _train_teacher(net, data, config)
    if net.compiled and not config.recompiles():
        # Its optimizer (a `.keras` file's) decays every weight: Keras does not
        # save the exclusion of biases and normalisation weights.
        recipe.spare_from_weight_decay(net)
        return
    recommended = net.default_optimizer() if hasattr(net, "default_optimizer") else None
    if steps_per_epoch is None and (config.schedule != "constant" or config.warmup_epochs):
        raise ZooError(
            "Expected a data pipeline of known length for a learning-rate schedule or "
            f"warmup. Received: schedule={config.schedule!r}, "
            f"warmup_epochs={config.warmup_epochs}"
        )
    optimizer = config.make_optimizer(recommended, steps_per_epoch or 1)
    smoothing = config.label_smoothing if recipe.soft_targets(config) else None
    compile_for_task(net, task, optimizer, label_smoothing=smoothing)


def compile_for_task(net, task, optimizer, *, label_smoothing=None) -> None:
    """Compiles `net` with the loss and metrics of a `zoo.TASKS` task.

    Models with a custom training step (`task` of `None` or one not in
    `_OBJECTIVES`) carry their own losses and metrics and take only the
    optimizer (copied for each of their optimizer groups). A classifier with
    a `label_smoothing` (0 included) takes one-hot targets, which mixup and
    cutmix mix. Weight decay spares biases, normalisation weights and what
    layers name in `no_weight_decay()` (`recipe.spare_from_weight_decay`).
    """
    if task not in _OBJECTIVES:
        net.compile(optimizer=optimizer)
        recipe.spare_from_weight_decay(net)
        return
    loss, metrics = _OBJECTIVES[task](net)
    if label_smoothing is not None and task == "classification":
        loss = keras.losses.CategoricalCrossentropy(
            from_logits=True, label_smoothing=label_smoothing
        )
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    net.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    recipe.spare_from_weight_decay(net)
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
    inputs = pipeline.training_inputs(data, config.batch_size, seed=config.seed)
    compile_for_task(teacher, "classification", config.make_optimizer(None, inputs.steps or 1))
    teacher.fit(
        **inputs.arguments,
        epochs=config.epochs,
        callbacks=[*inputs.callbacks, *distribute.callbacks()],
        verbose=_verbosity(config),
    )
    teacher.trainable = False
    distiller.teacher_trained = True


def _check_distributable(model, dataset):
    if pipeline.is_stream(dataset):
        raise ZooError(
            "Expected a data set or arrays for distribute='data', whose global batches are "
            "split among the replicas. Received: a data pipeline of type "
            f"{type(dataset).__name__}"
        )
    if not isinstance(model, str):
        raise ZooError(
            "Expected a zoo model name for distribute='data', to build on the replicas. "
            f"Received: model of type {type(model).__name__}"
        )


def _model_source(model):
    """`(model, source)`: a `.keras` path loaded, and where the model came
    from, as JSON, for config.json and a checkpoint's identity."""
    if isinstance(model, str) and (model.endswith(".keras") or os.sep in model):
        path = os.path.abspath(model)
        return zoo.load_model(model), {"path": path, "sha256": outputs.sha256(path)}
    if isinstance(model, str):
        zoo.model_task(model)  # an unknown name fails here
        return model, {"name": model}
    if isinstance(model, keras.Model):
        return model, {"class": type(model).__name__, "name": model.name}
    raise ZooError(
        "Expected model to be a zoo model name, a .keras file or a keras.Model. "
        f"Received: model of type {type(model).__name__}"
    )


def _dataset(dataset, config, validation_data=None, test_data=None):
    """The run's data: a `Dataset` of arrays, or a `pipeline.Stream`."""
    if pipeline.is_stream(dataset):
        return pipeline.stream(dataset, validation_data, test_data)
    if validation_data is not None or test_data is not None:
        raise ZooError(
            "Expected validation_data and test_data only with a data pipeline; a data set is "
            "split by validation_fraction and test_fraction. Received: dataset of type "
            f"{type(dataset).__name__}"
        )
    splits = dict(
        seed=config.seed,
        validation_fraction=config.validation_fraction,
        test_fraction=config.test_fraction,
    )
    if isinstance(dataset, Dataset):
        return dataset
    if isinstance(dataset, str):
        return load_dataset(dataset, image_size=config.image_size, **splits)
    if isinstance(dataset, tuple | list) and len(dataset) == 2:
        data = from_arrays(*dataset, **splits)  # checked before anything reads them
        fingerprint = fingerprint_arrays(np.asarray(dataset[0]), np.asarray(dataset[1]))
        return dataclasses.replace(data, source={"fingerprint": fingerprint})
    raise ZooError(
        "Expected dataset to be a data set name or path, a training.Dataset, an (x, y) "
        "pair of arrays or a data pipeline (keras.utils.PyDataset, tf.data.Dataset, "
        f"torch DataLoader, grain). Received: dataset of type {type(dataset).__name__}"
    )


def _describe_data(data):
    """The run's data as JSON: its name and, where known, its source."""
    return {"name": data.name, **(data.source or {})}


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
    learned = ["num_classes"] if task in _CLASSES_FROM_DATA else []
    if "vocab_size" in zoo.model_arguments(model):
        learned.append("vocab_size")
    if isinstance(data, pipeline.Stream):
        missing = [name for name in learned if name not in kwargs]
        if missing:
            raise ZooError(
                f"Expected model_kwargs (--model-arg) to give {' and '.join(missing)} for "
                f"{model!r}: a data pipeline's batches are not known before it runs. "
                f"Received: model_kwargs={model_kwargs!r}"
            )
    elif "num_classes" in learned:
        kwargs.setdefault("num_classes", data.num_classes)
    if "vocab_size" in learned and not isinstance(data, pipeline.Stream):
        tokens = (data.x_train, data.x_val, data.x_test) + (
            (data.y_train,) if task == "language_modeling" else ()
        )
        kwargs.setdefault("vocab_size", int(max(t.max() for t in tokens)) + 1)
    return zoo.create_model(model, **kwargs), task


def _match_targets(net, data, soft=False):
    """Gives a one-unit classifier its labels as a float column, and a
    classifier trained on one-hot targets (`soft`, or compiled with
    categorical cross-entropy) one-hot labels.

    Binary metrics do not squeeze: `(N,)` labels against `(N, 1)` probabilities
    broadcast to `(N, N)` and give a meaningless accuracy.
    """
    if (
        isinstance(net, CustomStepModel)
        or isinstance(data, pipeline.Stream)
        or data.task != "classification"
    ):
        return data
    units = net.output_shape[-1]
    if units == 1:
        column = {
            split: getattr(data, split).reshape(-1, 1).astype("float32")
            for split in ("y_train", "y_val", "y_test")
        }
        return dataclasses.replace(data, **column)
    if soft or isinstance(getattr(net, "loss", None), keras.losses.CategoricalCrossentropy):
        one_hot = {
            split: np.eye(units, dtype="float32")[getattr(data, split)]
            for split in ("y_train", "y_val", "y_test")
            if getattr(data, split).ndim == 1
        }
        return dataclasses.replace(data, **one_hot)
    return data


def _image_size(data):
    """`(height, width)` of a data set's images."""
    shape = data.input_shape
    return shape[:2] if keras.config.image_data_format() == "channels_last" else shape[1:]


def _model_kwargs(model, config):
    """`model_kwargs`, with `drop_path` as the builder's `drop_path_rate`
    (timm's name) where the config asks for it: only for a zoo model whose
    builder takes it."""
    if not config.drop_path:
        return config.model_kwargs
    if not isinstance(model, str) or "drop_path_rate" not in zoo.model_arguments(model):
        name = model if isinstance(model, str) else type(model).__name__
        raise ZooError(
            "Expected a zoo model with residual blocks (resnet*, vit_*, mobilenet_v2) for "
            f"drop_path. Received: drop_path={config.drop_path} for {name!r}"
        )
    return {"drop_path_rate": config.drop_path, **config.model_kwargs}


def _check_precision(net, precision):
    policy = getattr(net, "dtype_policy", None)
    if policy is not None and policy.name != precision:
        raise ZooError(
            f"Expected a model built with the dtype policy {precision!r}, or a zoo model name "
            f"to build with it; pass precision={policy.name!r} (--precision) to train this one "
            f"as it was built. Received: {net.name!r} with {policy.name!r}"
        )
    if precision == "mixed_float16" and isinstance(net, CustomStepModel):
        # Its step applies its own gradients, with no loss to scale.
        raise ZooError(
            "Expected precision float32 or mixed_bfloat16 for a model with a custom training "
            f"step, which does not scale its losses. Received: precision='mixed_float16' for "
            f"{net.name!r}"
        )


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
    inputs = pipeline.test_inputs(data, batch_size)
    if inputs is None:
        return {}  # a pipeline without test data
    with performance.kernels():
        results = net.evaluate(**inputs, verbose=0, return_dict=True)
    return {f"test_{k}": float(v) for k, v in results.items()}


def _write_run(output_dir, net, data, config, history, metrics, run):
    outputs.save_model(net, os.path.join(output_dir, "model.keras"))
    outputs.write_json(os.path.join(output_dir, "history.json"), history)
    outputs.write_json(
        os.path.join(output_dir, "config.json"),
        {
            "model": net.name,
            "dataset": data.name,
            **run,
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
