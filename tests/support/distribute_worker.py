"""Run by test_distribute.py in a fresh process (KERAS_BACKEND set; under
torchrun for torch), as the backends' devices are fixed when they start.

    python distribute_worker.py TASK[,TASK...] OUTPUT_DIR [DEVICES]

Each TASK is `equivalence`, `custom_step`, `recipe` or a generative zoo model's name;
they run one after another in the same processes, which start once.

DEVICES, the replicas per host, defaults to 2; `all` leaves the choice to the
backend (one per worker under TF_CONFIG or jax.distributed). For each task,
each process writes `OUTPUT_DIR/TASK/result_<torch rank, else 0>.json`; the
chief's run also writes its run directory under `OUTPUT_DIR/TASK`.
"""

import json
import os
import sys

import keras
import numpy as np
from keras import ops
from runs import RECIPE

import training
import zoo
from training import distribute, pipeline
from training.data import Dataset, load_dataset
from training.loop import compile_for_task
from zoo.steps import CustomStepModel, value_and_grad

DEVICES = {"all": None}.get(sys.argv[3], sys.argv[3]) if len(sys.argv) > 3 else 2
DEVICES = DEVICES and int(DEVICES)
BATCH_SIZE = 32
EPOCHS = 2
LEARNING_RATE = 0.1
GENERATIVE_BATCH_SIZE = 64


def equivalence(output_dir):
    """mlp on digits, data-parallel, against one device on the same batches."""
    data = load_dataset("digits")
    assert len(data.x_train) % BATCH_SIZE, "the last batch must be partial"
    result = training.fit(
        "mlp",
        data,
        distribute="data",
        devices=DEVICES,
        optimizer="sgd",
        learning_rate=LEARNING_RATE,
        batch_size=BATCH_SIZE,
        epochs=EPOCHS,
        output_dir=os.path.join(output_dir, "run"),
        verbose=0,
    )
    # One device (the distribution is over): the same start, batches, steps.
    training.seed_everything(0)
    reference = zoo.create_model("mlp", input_shape=data.input_shape, num_classes=10)
    compile_for_task(reference, "classification", keras.optimizers.SGD(LEARNING_RATE))
    _train_on_global_batches(reference, data.x_train, data.y_train, seed=0)
    inputs = data.x_test[:16]
    np.save(os.path.join(output_dir, f"predictions_{_process()}.npy"), result.model.predict(inputs))
    return {
        "max_abs_diff": _max_abs_diff(result.model, reference),
        "steps": int(ops.convert_to_numpy(result.model.optimizer.iterations)),
        "expected_steps": EPOCHS * (len(data.x_train) // BATCH_SIZE),
        "output_dir": result.output_dir,
        "test_accuracy": result.metrics["test_accuracy"],
        "history": result.history,
    }


# The whole recipe (the mlp's, on digits) but what 2 replicas cannot train as
# one device does (README, "What differs from one device"): mixed precision,
# which rounds each replica's share of a gradient, and on TensorFlow gradient
# accumulation, which its replicas refuse. Clipping at 0.1 clips every step.
REPLICATED_RECIPE = {
    **RECIPE,
    "precision": "float32",
    "clip_norm": 0.1,
    "grad_accum_steps": 1 if keras.backend.backend() == "tensorflow" else 2,
}


def recipe(output_dir):
    """The recipe, data-parallel, against one device."""
    # Only whole global batches, so that one device has no partial last batch
    # either; evaluation batches that the replicas split evenly.
    data = _whole_batches(REPLICATED_RECIPE["batch_size"], train_batches=4)
    replicated = training.fit("mlp", data, distribute="data", devices=DEVICES, **REPLICATED_RECIPE)
    reference = training.fit("mlp", data, **REPLICATED_RECIPE)
    return {"max_abs_diff": _max_abs_diff(replicated.model, reference.model)}


@keras.saving.register_keras_serializable(package="test")
class Regressor(CustomStepModel):
    """A linear model whose written-once step mixes an ops loss and a Keras
    `Loss` object, which TensorFlow's replicas scale differently."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.net = keras.Sequential([keras.Input((64,)), keras.layers.Dense(3, name="dense")])
        self.mse = keras.losses.MeanSquaredError()
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, x):
        return self.net(x)

    def fit_step(self, data):
        # train_on_batch hands torch the NumPy arrays as they are.
        x, y = map(ops.convert_to_tensor, keras.utils.unpack_x_y_sample_weight(data)[:2])
        variables = self.net.trainable_variables

        def loss_fn():
            prediction = self.net(x)
            return ops.mean(ops.abs(prediction - y)) + self.mse(y, prediction)

        loss, grads = value_and_grad(loss_fn, variables)
        self.optimizer["model"].apply(grads, variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def evaluate_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        self.loss_tracker.update_state(ops.mean(ops.abs(self.net(x) - y)))
        return {"loss": self.loss_tracker.result()}


def custom_step(output_dir):
    """A written-once step, data-parallel, against one device on the same batches."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 64)).astype("float32")
    y = (x[:, :3] * 2.0 + 1.0).astype("float32")
    data = Dataset("regression", x, y, x[:20], y[:20], x[:20], y[:20], None)
    with distribute.data_parallel(DEVICES):
        training.seed_everything(0)
        replicated = Regressor()
        replicated.compile(keras.optimizers.SGD(LEARNING_RATE))
        inputs = pipeline.training_inputs(data, BATCH_SIZE, seed=0)
        replicated.fit(
            **inputs.arguments,
            epochs=EPOCHS,
            callbacks=[*inputs.callbacks, *distribute.callbacks()],
            verbose=0,
        )
    training.seed_everything(0)
    reference = Regressor()
    reference.compile(keras.optimizers.SGD(LEARNING_RATE))
    _train_on_global_batches(reference, x, y, seed=0)
    return {"max_abs_diff": _max_abs_diff(replicated, reference)}


def generative(name, output_dir):
    """A zoo model with a written-once step (dcgan, vae) trains data-parallel."""
    # The vae keeps the whole digits, whose partial last batches a written-once
    # step must train and evaluate across replicas too. dcgan trains on whole
    # batches: each partial one is another compile of its two-optimizer step
    # (9 of its 23 CPU seconds on JAX).
    data = "digits" if name == "vae" else _whole_batches(GENERATIVE_BATCH_SIZE, train_batches=2)
    run = training.fit(
        name,
        data,
        distribute="data",
        devices=DEVICES,
        batch_size=GENERATIVE_BATCH_SIZE,
        epochs=1,
        output_dir=os.path.join(output_dir, "run"),
        verbose=0,
    )
    return {"history": run.history, "output_dir": run.output_dir}


def _whole_batches(batch_size, train_batches):
    """The digits, cut to `train_batches` whole batches of training data and
    one batch each of validation and test data."""
    digits = load_dataset("digits")
    samples = train_batches * batch_size
    return Dataset(
        "digits",
        digits.x_train[:samples],
        digits.y_train[:samples],
        digits.x_val[:batch_size],
        digits.y_val[:batch_size],
        digits.x_test[:batch_size],
        digits.y_test[:batch_size],
        digits.num_classes,
    )


def _train_on_global_batches(model, x, y, seed):
    for epoch in range(EPOCHS):
        batches = pipeline.EpochBatches(
            x, y, BATCH_SIZE, seed=seed, epoch=epoch, last_multiple=BATCH_SIZE
        )
        for index in range(len(batches)):
            model.train_on_batch(*batches[index])


def _max_abs_diff(model, reference):
    return max(
        float(np.max(np.abs(ops.convert_to_numpy(a) - ops.convert_to_numpy(b))))
        for a, b in zip(model.weights, reference.weights, strict=True)
    )


def _process():
    return int(os.environ.get("RANK", 0))  # torchrun's; other launchers get a dir each


if __name__ == "__main__":
    tasks, root = sys.argv[1].split(","), sys.argv[2]
    runs = {"equivalence": equivalence, "custom_step": custom_step, "recipe": recipe}
    for task in tasks:
        output_dir = os.path.join(root, task)
        os.makedirs(output_dir, exist_ok=True)
        result = runs[task](output_dir) if task in runs else generative(task, output_dir)
        with open(os.path.join(output_dir, f"result_{_process()}.json"), "w") as f:
            json.dump(result, f)
