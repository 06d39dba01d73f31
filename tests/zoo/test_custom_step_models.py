"""What the custom-step models promise, on whichever backend runs the tests.

Each model trains once per module (`trained`), and the tests read what changed.
On JAX this is the check that nothing is dropped by the stateless step: every
optimizer's slots, iteration counts, BatchNorm statistics and seeds.
"""

import dataclasses
import json

import keras
import numpy as np
import pytest
from harness import ZERO_GRADIENT
from tiny import CUSTOM_STEP_TASKS, TINY_KWARGS, tiny_architecture

import training
import zoo
from training.data import load_dataset

MODELS = [name for name in zoo.list_models() if zoo.model_task(name) in CUSTOM_STEP_TASKS]
# The loss each model must lower on held-out data.
FALLING_LOSS = {
    "dcgan": "d_loss",  # the discriminator learns
    "wgan_gp": "d_loss",  # so does the critic
    "vae": "loss",
    "distiller": "loss",
    "simclr": "contrastive_loss",
}
STEPS = 2 * 256 // 32
# Divides the digits' 1258 training images: a partial last batch is another
# compile of a model's step (13 of dcgan's 36 seconds through the CLI on JAX).
# The fits at the end of this module train on partial batches.
CLI_BATCH_SIZE = 34


def digits_model(name):
    kwargs = {**TINY_KWARGS[name], "input_shape": (8, 8, 1)}
    if "num_classes" in kwargs:
        kwargs["num_classes"] = 10
    model = zoo.create_model(name, **kwargs)
    model.compile(optimizer=model.default_optimizer() or keras.optimizers.Adam(1e-3))
    return model


def numpy_weights(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


@dataclasses.dataclass
class Trained:
    model: keras.Model
    before: list
    after: list
    metrics_before: dict
    metrics_after: dict


@pytest.fixture(scope="module", params=MODELS)
def trained(request):
    training.seed_everything(0)
    data = load_dataset("digits")
    model = digits_model(request.param)
    # The test split in one batch: one compile of the evaluation step, not a
    # second for a partial last batch.
    test = dict(x=data.x_test, y=data.y_test, batch_size=len(data.x_test), verbose=0)
    metrics_before = model.evaluate(**test, return_dict=True)
    before = numpy_weights(model.variables)
    model.fit(data.x_train[:256], data.y_train[:256], epochs=2, batch_size=32, verbose=0)
    metrics_after = model.evaluate(**test, return_dict=True)
    return Trained(model, before, numpy_weights(model.variables), metrics_before, metrics_after)


def test_every_custom_step_model_is_covered():
    assert sorted(MODELS) == sorted(FALLING_LOSS)


def test_losses_are_finite_and_move_the_right_way(trained):
    assert np.isfinite(list(trained.metrics_after.values())).all()
    loss = FALLING_LOSS[trained.model.name]
    assert trained.metrics_after[loss] < trained.metrics_before[loss]


def test_every_optimizer_state_advances(trained):
    model = trained.model
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == STEPS
    for name, optimizer in model.optimizer.members.items():
        updates = STEPS * (
            model.critic_steps if name == "discriminator" and model.name == "wgan_gp" else 1
        )
        assert int(keras.ops.convert_to_numpy(optimizer.iterations)) == updates, name
        moments = [v for v in optimizer.variables if "momentum" in v.path or "velocity" in v.path]
        assert len(moments) == 2 * len(model.group_variables(name)), name
        for moment in moments:
            if not any(exempt.replace("/", "_") in moment.path for exempt in ZERO_GRADIENT):
                assert np.any(keras.ops.convert_to_numpy(moment)), moment.path


def test_every_optimized_weight_changes(trained):
    model = trained.model
    optimized = {id(v) for name in model.optimizer.members for v in model.group_variables(name)}
    for variable, old, new in zip(model.variables, trained.before, trained.after, strict=True):
        if id(variable) in optimized and variable.path not in ZERO_GRADIENT:
            assert not np.array_equal(old, new), variable.path


def test_batchnorm_statistics_and_seeds_change(trained):
    state = [
        (v.path, old, new)
        for v, old, new in zip(trained.model.variables, trained.before, trained.after, strict=True)
        if ("moving_" in v.path or "seed_generator_state" in v.path) and "teacher" not in v.path
    ]
    assert state or trained.model.name == "distiller"
    for path, old, new in state:
        assert not np.array_equal(old, new), path


def test_frozen_weights_stay_bit_for_bit(trained):
    """The distiller's teacher: in no optimizer group, and unchanged."""
    model = trained.model
    optimized = {id(v) for name in model.optimizer.members for v in model.group_variables(name)}
    teacher = [
        (v, old, new)
        for v, old, new in zip(model.variables, trained.before, trained.after, strict=True)
        if "teacher" in v.path
    ]
    assert teacher or model.name != "distiller"
    for variable, old, new in teacher:
        assert id(variable) not in optimized
        np.testing.assert_array_equal(old, new, err_msg=variable.path)


@pytest.mark.parametrize("name", MODELS)
def test_the_same_seed_gives_the_same_result(name):
    data = load_dataset("digits")

    def weights():
        training.seed_everything(7)
        model = digits_model(name)
        model.fit(data.x_train[:64], data.y_train[:64], epochs=1, batch_size=32, verbose=0)
        return numpy_weights(model.variables)

    for a, b in zip(weights(), weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_simclr_keeps_xla_on_jax():
    """Keras declares SimCLR's translation and zoom layers unfit for XLA, which
    would run its whole step op by op on JAX; there they compile
    (`zoo.steps.allow_xla`), and the module's tests above train it so."""
    model = digits_model("simclr")
    assert model.jit_compile is (keras.backend.backend() == "jax")


@pytest.mark.parametrize("name", MODELS)
def test_trains_through_the_cli_and_writes_its_losses(name, tmp_path):
    from training import cli

    args = f"fit --model {name} --dataset digits --epochs 1 --verbose 0".split()
    args += ["--batch-size", str(CLI_BATCH_SIZE)]
    for key, value in tiny_architecture(name).items():
        args += ["--model-arg", f"{key}={json.dumps(value)}"]
    assert cli.main([*args, "--output-dir", str(tmp_path)]) == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert {"history.json", "metrics.json", "model.keras", "curves.png"} <= set(files)
    if zoo.model_task(name) == "generative":
        assert "samples_epoch_001.png" in files
    history = json.loads((tmp_path / "history.json").read_text())
    assert FALLING_LOSS[name] in history and np.isfinite(history[FALLING_LOSS[name]]).all()


def test_an_untrained_teacher_is_trained_first_then_frozen():
    result = training.fit("distiller", "digits", epochs=3, verbose=0)
    teacher = result.model.teacher
    assert result.model.teacher_trained and not teacher.trainable
    data = load_dataset("digits")
    logits = keras.ops.convert_to_numpy(teacher.predict(data.x_test, verbose=0))
    assert (logits.argmax(1) == data.y_test).mean() > 0.9
    assert result.metrics["test_accuracy"] > 0.5


def test_a_saved_custom_step_model_evaluates_from_its_file(tmp_path):
    result = training.fit("vae", "digits", epochs=1, output_dir=str(tmp_path), verbose=0)
    metrics = training.evaluate(tmp_path / "model.keras", "digits")
    assert set(metrics) == set(result.metrics) and np.isfinite(list(metrics.values())).all()


def test_a_learning_rate_alone_keeps_the_model_recipe():
    result = training.fit("dcgan", "digits", epochs=1, learning_rate=2e-4, verbose=0)
    for optimizer in result.model.optimizer.members.values():
        assert float(keras.ops.convert_to_numpy(optimizer.learning_rate)) == pytest.approx(2e-4)
        assert optimizer.beta_1 == 0.5
