"""The training recipe (`training.recipe`): each option does what it says, on
the smallest models and data, on every backend."""

import json
import math
import types

import keras
import numpy as np
import pytest
from runs import RECIPE, interrupt

import training
import zoo
from training import cli, loop, recipe
from training.config import FitConfig

# Tiny classification arrays: 8x8 one-channel images of 4 classes.
RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(0, 1, size=(100, 8, 8, 1)).astype("float32")
LABELS = RNG.integers(0, 4, size=100)
if keras.config.image_data_format() == "channels_first":
    IMAGES = np.moveaxis(IMAGES, -1, 1)
# The smallest ViT for them: 4 patches, one block.
TINY_VIT = dict(
    input_shape=IMAGES.shape[1:],
    num_classes=4,
    patch_size=4,
    embed_dim=4,
    depth=1,
    num_heads=1,
    mlp_dim=4,
)


class _Recorder(keras.callbacks.Callback):
    """The learning rate at each epoch's first step, and at the last epoch's
    end the raw weights and the optimizer's EMA of them."""

    def __init__(self):
        super().__init__()
        self.rates, self.raw, self.averages = [], [], []

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        self.rates.append(float(optimizer._get_current_learning_rate()))

    def on_epoch_end(self, epoch, logs=None):
        self.raw.append([keras.ops.convert_to_numpy(v) for v in self.model.trainable_weights])
        self.averages.append(
            [
                keras.ops.convert_to_numpy(v)
                for v in self.model.optimizer.variables
                if v.name.endswith("_average")
            ]
        )


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    """One run with the optimizer's recipe on: a cosine schedule with warmup,
    weight decay, label smoothing, clipping, accumulation, EMA, early stopping."""
    options = dict(
        epochs=4,
        batch_size=10,
        learning_rate=0.01,
        schedule="cosine",
        warmup_epochs=1,
        min_learning_rate=0.001,
        weight_decay=0.05,
        label_smoothing=0.2,
        clip_norm=1.0,
        grad_accum_steps=2,
        ema=0.5,
        early_stopping=10,
        model_kwargs={"hidden_units": (8,)},
        verbose=0,
    )
    output_dir = tmp_path_factory.mktemp("recipe") / "run"
    recorder = _Recorder()
    result = training.fit(
        "mlp",
        (IMAGES, LABELS),
        output_dir=str(output_dir),
        keras_callbacks=[recorder],
        **options,
    )
    return result, output_dir, recorder, options


def test_the_recipe_is_recorded_and_wired_into_keras(recipe_run):
    result, output_dir, _, options = recipe_run
    config = json.loads((output_dir / "config.json").read_text())
    recorded = {k: tuple(v) if k == "model_kwargs" else v for k, v in config.items()}
    assert {k: recorded[k] for k in options if k != "model_kwargs"} == {
        k: v for k, v in options.items() if k != "model_kwargs"
    }
    optimizer = result.model.optimizer
    assert optimizer.weight_decay == pytest.approx(0.05)
    assert optimizer.global_clipnorm == 1.0
    assert optimizer.gradient_accumulation_steps == 2
    assert optimizer.use_ema and optimizer.ema_momentum == 0.5
    assert isinstance(result.model.loss, keras.losses.CategoricalCrossentropy)
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_the_learning_rate_follows_the_schedule_and_the_warmup(recipe_run):
    _, _, recorder, options = recipe_run
    steps = 7  # 70 training samples in batches of 10
    config = FitConfig(
        epochs=4, learning_rate=0.1, schedule="cosine", warmup_epochs=1, min_learning_rate=0.01
    )
    schedule = recipe.learning_rate(config, 0.1, steps)
    rates = [float(schedule(step)) for step in range(4 * steps + 2)]
    warmup = [1e-5 + (0.1 - 1e-5) * s / steps for s in range(steps)]
    cosine = [0.01 + 0.09 * 0.5 * (1 + math.cos(math.pi * s / (3 * steps))) for s in range(22)]
    np.testing.assert_allclose(rates, warmup + cosine + [0.01], rtol=1e-5)
    # The run's own optimizer: at the first step of each epoch.
    expected = recipe.learning_rate(FitConfig(**options), 0.01, steps)
    np.testing.assert_allclose(
        recorder.rates, [float(expected(e * steps)) for e in range(4)], rtol=1e-5
    )

    step = FitConfig(epochs=6, learning_rate=0.1, schedule="step", warmup_epochs=2)
    schedule = recipe.learning_rate(step, 0.1, 3)
    per_epoch = [float(schedule(e * 3 + s)) for e in range(6) for s in range(3)]
    expected = [1e-5, 1e-5 + (0.1 - 1e-5) / 2, 0.01, 0.01, 0.001, 0.001]
    np.testing.assert_allclose(per_epoch, np.repeat(expected, 3), rtol=1e-5)
    constant = FitConfig(epochs=3, learning_rate=0.1, warmup_epochs=1)
    schedule = recipe.learning_rate(constant, 0.1, 2)
    expected = [1e-5, 1e-5 + (0.1 - 1e-5) / 2, *[0.1] * 4]
    np.testing.assert_allclose([float(schedule(s)) for s in range(6)], expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "lion"])
def test_weight_decay_shrinks_a_weight_without_gradient(name):
    config = FitConfig(optimizer=name, learning_rate=0.1, weight_decay=0.5)
    optimizer = config.make_optimizer()
    weight = keras.Variable(np.full((3,), 2.0, "float32"))
    optimizer.apply([keras.ops.zeros((3,))], [weight])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weight), 2.0 * (1 - 0.1 * 0.5))

    # A compiled model's: kernels only, as timm spares biases, normalisation
    # weights and ViT's class token and position embedding.
    net = zoo.create_model("vit_tiny", **TINY_VIT)
    loop.compile_for_task(net, "classification", config.make_optimizer())
    weights = net.trainable_variables
    for variable in weights:
        variable.assign(np.full(variable.shape, 2.0, "float32"))
    net.optimizer.apply([keras.ops.zeros(v.shape) for v in weights], weights)
    values = {v.path: keras.ops.convert_to_numpy(v) for v in weights}
    assert {"vit_tiny_cls_token/token", "vit_tiny_pos_embed/embedding"} <= values.keys()
    for path, value in values.items():
        expected = 2.0 * (1 - 0.1 * 0.5) if path.endswith("/kernel") else 2.0
        np.testing.assert_allclose(value, expected, rtol=1e-6, err_msg=path)


def test_a_compiled_model_given_to_fit_keeps_sparing_biases_from_weight_decay(recipe_run):
    """A `.keras` model trained without recompiling keeps its own optimizer,
    whose exclusion from weight decay Keras does not save."""
    _, output_dir, _, _ = recipe_run
    result = training.fit(str(output_dir / "model.keras"), (IMAGES, LABELS), epochs=1, verbose=0)
    net = result.model
    assert net.optimizer.weight_decay == pytest.approx(0.05)  # not recompiled by the recipe
    decayed = [v.path for v in net.trainable_variables if net.optimizer._use_weight_decay(v)]
    assert decayed == [v.path for v in net.trainable_variables if v.path.endswith("/kernel")]


def test_clipping_bounds_the_global_norm_of_the_update():
    optimizer = FitConfig(optimizer="sgd", learning_rate=1.0, clip_norm=0.5).make_optimizer()
    weights = [keras.Variable(np.zeros((4,), "float32")), keras.Variable(np.zeros((2, 2)))]
    optimizer.apply([keras.ops.full((4,), 3.0), keras.ops.full((2, 2), -4.0)], weights)
    update = np.concatenate([keras.ops.convert_to_numpy(w).ravel() for w in weights])
    assert np.linalg.norm(update) == pytest.approx(0.5, rel=1e-5)


def test_accumulated_steps_equal_one_step_on_a_k_times_batch():
    def trained(batch_size, accumulate):
        keras.utils.set_random_seed(0)
        net = zoo.create_model("mlp", input_shape=(6,), hidden_units=(8,), num_classes=3)
        config = FitConfig(optimizer="adam", learning_rate=0.1, grad_accum_steps=accumulate)
        net.compile(config.make_optimizer(), "sparse_categorical_crossentropy")
        x, y = RNG.normal(size=(12, 6)).astype("float32"), RNG.integers(0, 3, 12)
        net.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        return net.get_weights()

    RNG_STATE = RNG.bit_generator.state
    accumulated = trained(4, 3)
    RNG.bit_generator.state = RNG_STATE
    for want, got in zip(trained(12, 1), accumulated, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)


def test_ema_is_the_average_of_the_raw_weights_and_the_saved_model_holds_it(recipe_run):
    optimizer = FitConfig(optimizer="sgd", learning_rate=1.0, ema=0.75).make_optimizer()
    weight = keras.Variable(np.zeros((2,), "float32"))
    average = None
    for grad in ([1.0, 2.0], [-3.0, 1.0], [0.5, 0.5]):
        optimizer.apply([keras.ops.convert_to_tensor(grad)], [weight])
        raw = keras.ops.convert_to_numpy(weight)
        average = raw if average is None else 0.75 * average + 0.25 * raw
    optimizer.finalize_variable_values([weight])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(weight), average, rtol=1e-6)

    # Early stopping keeps the EMA weights of the epoch of the best validation loss.
    result, output_dir, recorder, _ = recipe_run
    saved = zoo.load_model(output_dir / "model.keras")
    best = int(np.argmin(result.history["val_loss"]))
    raws, averages = recorder.raw[best], recorder.averages[best]
    assert len(averages) == len(raws) == len(saved.trainable_weights)
    for raw, ema, got in zip(raws, averages, saved.trainable_weights, strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), ema, rtol=1e-6)
        assert not np.allclose(raw, ema)


def test_ema_without_early_stopping_tests_saves_and_keeps_its_average(tmp_path):
    # Keras puts the averages in the weights at the end of fit; on JAX the two
    # shared one buffer, which evaluating the test split deleted, and saving failed.
    result = training.fit(
        "mlp",
        (IMAGES, LABELS),
        epochs=2,
        ema=0.5,
        model_kwargs={"hidden_units": (8,)},
        verbose=0,
        output_dir=str(tmp_path / "run"),
    )
    saved = zoo.load_model(tmp_path / "run" / "model.keras")
    averages = [v for v in result.model.optimizer.variables if v.name.endswith("_average")]
    weights = result.model.trainable_weights
    for got, weight, average in zip(saved.trainable_weights, weights, averages, strict=True):
        want = keras.ops.convert_to_numpy(weight)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), want)
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(average), want)


def test_label_smoothing_gives_the_known_loss(recipe_run):
    result, *_ = recipe_run
    # Two classes, softmax (3/4, 1/4); smoothed by 0.2 the target is (0.9, 0.1).
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2)
    config = result.model.loss.get_config()
    assert config["label_smoothing"] == 0.2 and config["from_logits"]
    value = loss(np.array([[1.0, 0.0]]), np.array([[math.log(3.0), 0.0]]))
    expected = -(0.9 * math.log(0.75) + 0.1 * math.log(0.25))
    assert float(value) == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.39754, abs=1e-5)


def _fit_one_epoch(**options):
    return training.fit(
        "mlp", (IMAGES, LABELS), epochs=1, model_kwargs={"hidden_units": (8,)}, verbose=0, **options
    )


def test_mixed_bfloat16_keeps_float32_weights_and_computes_in_bfloat16():
    before = keras.config.dtype_policy().name
    result = _fit_one_epoch(precision="mixed_bfloat16")
    assert keras.config.dtype_policy().name == before  # put back after the run
    dense = [layer for layer in result.model.layers if layer.weights]
    assert all(w.dtype == "float32" for layer in dense for w in layer.weights)
    assert {layer.dtype_policy.compute_dtype for layer in dense} == {"bfloat16"}
    assert keras.backend.standardize_dtype(result.model(IMAGES[:2]).dtype) == "bfloat16"


def test_float16_loss_scaling_survives_an_overflowing_step():
    result = _fit_one_epoch(precision="mixed_float16")
    net = result.model
    assert isinstance(net.optimizer, keras.optimizers.LossScaleOptimizer)
    before, scale = net.get_weights(), float(net.optimizer.dynamic_scale)
    huge = np.full_like(IMAGES[:10], 6e4)  # float16 overflows in the forward pass
    net.train_on_batch(huge, LABELS[:10])
    after = net.get_weights()
    assert all(np.isfinite(w).all() for w in after)
    for want, got in zip(before, after, strict=True):
        np.testing.assert_array_equal(got, want)
    assert float(net.optimizer.dynamic_scale) == scale / 2


def _mixed(config, classes=32, batches=20):
    """Mixes batches of constant images whose value is their class, and
    returns the images' and the targets' mixed shares of the sample's own class."""
    size = (classes, 8, 8, 1)
    x = np.broadcast_to(np.arange(classes, dtype="float32")[:, None, None, None], size).copy()
    if keras.config.image_data_format() == "channels_first":
        x = np.moveaxis(x, -1, 1)
    y = np.eye(classes, dtype="float32")
    own_images, own_targets = [], []
    for batch in range(batches):
        images, targets = recipe.Augmentation(config, (8, 8))(x, y, (0, 0, batch))
        # Each image mixes its class's value with one other's: the targets say how much.
        np.testing.assert_allclose(targets.sum(axis=1), 1, rtol=1e-5)
        np.testing.assert_allclose(
            images.reshape(classes, -1).mean(axis=1), targets @ np.arange(classes), rtol=1e-4
        )
        own = targets[np.arange(classes), np.arange(classes)]
        mixed = own < 1 - 1e-6  # not paired with itself
        own_targets.append(own[mixed])
        pixels = images.reshape(classes, -1) == np.arange(classes)[:, None]
        own_images.append(pixels.mean(axis=1)[mixed])
    return np.concatenate(own_images), np.concatenate(own_targets)


def test_mixup_and_cutmix_targets_are_mixed_as_their_alpha_says():
    _, weights = _mixed(FitConfig(mixup=0.4))
    # Beta(0.4, 0.4): mean 1/2, variance 1 / (4 (2 alpha + 1)).
    assert weights.mean() == pytest.approx(0.5, abs=0.05)
    assert weights.var() == pytest.approx(1 / (4 * 1.8), abs=0.03)
    areas, weights = _mixed(FitConfig(cutmix=1.0))
    np.testing.assert_allclose(weights, areas, atol=1e-6)  # the share of its own pixels
    assert weights.var() > 0.03  # Beta(1, 1) areas, not a constant mix


def test_light_augmentation_crops_and_flips_each_batch_as_its_key_says():
    augment = recipe.Augmentation(FitConfig(augment="light"), (8, 8))
    first = augment(IMAGES[:16], np.eye(4)[LABELS[:16]], (0, 1, 2))
    again = augment(IMAGES[:16], np.eye(4)[LABELS[:16]], (0, 1, 2))
    other = augment(IMAGES[:16], np.eye(4)[LABELS[:16]], (0, 1, 3))
    assert first[0].shape == IMAGES[:16].shape
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0])
    np.testing.assert_array_equal(first[1], np.eye(4)[LABELS[:16]])


@pytest.mark.parametrize("model", ["resnet18", "mobilenet_v2", "vit_tiny"])
def test_drop_path_is_the_residual_families_drop_path_rate(model):
    config = FitConfig(drop_path=0.1, model_kwargs={"name": "net"})
    assert loop._model_kwargs(model, config) == {"drop_path_rate": 0.1, "name": "net"}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--schedule", "linear"], "Expected schedule to be one of constant, cosine, step"),
        (["--precision", "float16"], "Expected precision to be one of float32, mixed_bfloat16"),
        (["--ema", "1.5"], "Expected ema to be a decay in (0, 1). Received: ema=1.5"),
        (["--warmup-epochs", "3", "--epochs", "3"], "Expected warmup_epochs below epochs"),
        (["--label-smoothing", "1"], "Expected label_smoothing to be a number in [0, 1)"),
        (["--grad-accum-steps", "0"], "Expected grad_accum_steps to be an int >= 1"),
        (["--gpu-memory", "half"], "Expected gpu_memory to be one of grow, all"),
        (["--drop-path", "0.1"], "Expected a zoo model with residual blocks"),
        (
            ["--mixup", "0.2", "--dataset", "linear", "--model", "linear_regressor"],
            "Expected a classifier for label_smoothing, mixup and cutmix",
        ),
    ],
)
def test_bad_recipe_values_are_one_line_and_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["fit", "--verbose", "0", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


def test_config_file_sets_the_options_a_run_replays_and_flags_override(
    recipe_run, tmp_path, monkeypatch
):
    received = {}

    def fit(model, dataset, **options):
        received.update(options, model=model, dataset=dataset)
        return types.SimpleNamespace(output_dir=None)

    monkeypatch.setattr(training, "fit", fit)
    _, output_dir, _, options = recipe_run
    replay = ["fit", "--config", str(output_dir / "config.json"), "--output-dir", "again"]
    assert cli._fit(cli.parse_args(replay)) == 0
    assert received["model"] == "mlp" and received["model_kwargs"] == {"hidden_units": (8,)}
    assert {k: received[k] for k in options} == {**options, "model_kwargs": {"hidden_units": (8,)}}
    assert received["output_dir"] == "again"

    toml = tmp_path / "recipe.toml"
    toml.write_text('schedule = "cosine"\nema = 0.99\nepochs = 7\n')
    assert cli._fit(cli.parse_args(["fit", "--config", str(toml), "--epochs", "3"])) == 0
    assert (received["schedule"], received["ema"], received["epochs"]) == ("cosine", 0.99, 3)
    toml.write_text("learning_rat = 0.1\n")
    assert cli.main(["fit", "--config", str(toml)]) == 2


def test_a_killed_run_with_the_whole_recipe_resumes_to_the_uninterrupted_result(tmp_path):
    straight = training.fit("mlp", "digits", output_dir=str(tmp_path / "straight"), **RECIPE)
    resumed = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        training.fit(
            "mlp", "digits", output_dir=resumed, keras_callbacks=[interrupt(at=1)], **RECIPE
        )
    counter = interrupt()
    result = training.fit("mlp", "digits", output_dir=resumed, keras_callbacks=[counter], **RECIPE)
    assert counter.epochs == 2  # from the checkpoint of the first epoch
    assert result.history.keys() == straight.history.keys()
    for key, values in straight.history.items():
        np.testing.assert_allclose(result.history[key], values, rtol=1e-6, err_msg=key)
    saved = [zoo.load_model(tmp_path / run / "model.keras") for run in ("straight", "resumed")]
    for want, got in zip(*(net.get_weights() for net in saved), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    # The saved model trains on only in the policy it was built with, and says which.
    refused = tmp_path / "refused"
    with pytest.raises(zoo.ZooError) as error:
        training.fit(
            str(tmp_path / "straight" / "model.keras"),
            "digits",
            output_dir=str(refused),
            precision="float32",
            verbose=0,
        )
    assert str(error.value) == (
        "Expected a model built with the dtype policy 'float32', or a zoo model name to build "
        "with it; pass precision='mixed_float16' (--precision) to train this one as it was "
        f"built. Received: {saved[0].name!r} with 'mixed_float16'"
    )
    assert not refused.exists()


class _RawWeights(keras.callbacks.Callback):
    """The trainable weights by path before training and after each epoch
    (JAX's trainer writes them back to the variables only then)."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def _record(self):
        self.steps.append(
            {v.path: keras.ops.convert_to_numpy(v) for v in self.model.trainable_variables}
        )

    def on_train_begin(self, logs=None):
        self._record()

    def on_epoch_end(self, epoch, logs=None):
        self._record()


def test_a_custom_step_model_honours_precision_clipping_and_ema(tmp_path):
    recorder = _RawWeights()
    run = dict(epochs=2, batch_size=70, model_kwargs={"latent_dim": 8}, verbose=0)
    training.fit(
        "dcgan",
        (IMAGES, LABELS),  # 70 training images: one step an epoch
        optimizer="sgd",
        learning_rate=1.0,
        clip_norm=1e-3,
        ema=0.5,
        precision="mixed_bfloat16",
        output_dir=str(tmp_path / "run"),
        keras_callbacks=[recorder],
        **run,
    )
    saved = zoo.load_model(tmp_path / "run" / "model.keras")
    for network in (saved.generator, saved.discriminator):
        assert {layer.dtype_policy.name for layer in network.layers} == {"mixed_bfloat16"}
    assert {w.dtype for w in saved.weights} == {"float32"}

    # Each network's SGD step moves it by the clipped norm.
    before, first, second = recorder.steps
    for group in ("generator", "discriminator"):
        paths = [v.path for v in saved.group_variables(group)]
        for old, new in ((before, first), (first, second)):
            norm = math.sqrt(sum(((new[p] - old[p]) ** 2).sum() for p in paths))
            assert norm == pytest.approx(1e-3, rel=1e-4)
    # The saved weights are the EMA of the raw ones (the first step's average is its weights).
    for weight in saved.trainable_variables:
        average = 0.5 * first[weight.path] + 0.5 * second[weight.path]
        np.testing.assert_allclose(keras.ops.convert_to_numpy(weight), average, rtol=1e-6)
    assert any(not np.array_equal(first[p], second[p]) for p in second)

    with pytest.raises(zoo.ZooError, match="does not scale its losses"):
        training.fit("dcgan", (IMAGES, LABELS), precision="mixed_float16", **run)
