import dataclasses
import json
import os
import subprocess
import sys
import types

import keras
import numpy as np
import pytest

import training
import zoo
from training import backends, cli
from training.backends import BACKENDS
from training.config import FitConfig


def run_cli(*args, env=None):
    """Runs `python -m training` as a user would, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("cli") / "run"
    code = cli.main(
        [
            "fit",
            "--model",
            "mlp",
            "--epochs",
            "2",
            "--verbose",
            "0",
            "--output-dir",
            str(output_dir),
        ]
    )
    assert code == 0
    return output_dir


def test_fit_prints_test_metrics_as_json(trained, capsys):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert set(metrics) == {"test_loss", "test_accuracy"}
    assert cli.main(["evaluate", "--model-path", str(trained / "model.keras")]) == 0
    assert json.loads(capsys.readouterr().out) == pytest.approx(metrics, rel=1e-5)


def test_predict_writes_an_npy_file_and_refuses_to_overwrite_it(trained, tmp_path, capsys):
    model_path = str(trained / "model.keras")
    out = tmp_path / "predictions.npy"
    assert (
        cli.main(
            ["predict", "--model-path", model_path, "--dataset", "digits", "--output", str(out)]
        )
        == 0
    )
    assert np.load(out).shape == (359, 10)
    assert (
        cli.main(
            ["predict", "--model-path", model_path, "--dataset", "digits", "--output", str(out)]
        )
        == 2
    )
    assert "exists (pass --overwrite)" in capsys.readouterr().err


def test_predict_reads_npy_inputs_and_prints_json(trained, tmp_path, capsys):
    """The outputs are `model.predict`'s, whichever way this backend's
    `training.predict` runs (two batch shapes here: 2 and 1)."""
    inputs = tmp_path / "x.npy"
    x = np.random.default_rng(0).uniform(0, 16, (3, 8, 8, 1)).astype("float32")
    np.save(inputs, x)
    model_path = str(trained / "model.keras")
    args = ["predict", "--model-path", model_path, "--input", str(inputs), "--batch-size", "2"]
    assert cli.main(args) == 0
    predictions = np.array(json.loads(capsys.readouterr().out)["predictions"])
    expected = zoo.load_model(model_path).predict(x, batch_size=2, verbose=0)
    np.testing.assert_allclose(predictions, expected, rtol=1e-6, atol=1e-6)


def test_model_args_reach_the_builder(tmp_path):
    args = "fit --model mlp --epochs 1 --verbose 0 --output-dir".split() + [str(tmp_path)]
    args += ["--model-arg", "hidden_units=[16, 8]", "--model-arg", "dropout=0.1"]
    assert cli.main(args) == 0
    model = zoo.load_model(tmp_path / "model.keras")
    assert [layer.name for layer in model.layers] == [
        "mlp_flatten",
        "mlp_dense0",
        "mlp_dropout0",
        "mlp_dense1",
        "mlp_dropout1",
        "mlp_logits",
    ]


def test_freeze_backbone_reaches_fit(tmp_path):
    args = "fit --model mlp --epochs 1 --verbose 0 --freeze-backbone --output-dir".split()
    assert cli.main([*args, str(tmp_path)]) == 0
    model = zoo.load_model(tmp_path / "model.keras")
    assert [layer.name for layer in model.layers if layer.trainable_weights] == ["mlp_logits"]
    assert json.loads((tmp_path / "config.json").read_text())["freeze_backbone"] is True


def test_list_and_info(capsys):
    assert cli.main(["list", "*regressor", "--exclude", "lin*"]) == 0
    assert capsys.readouterr().out.split() == ["logistic_regressor"]
    assert cli.main(["info", "lenet5"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["style"] == "functional" and info["parameters"] == 61_706


@pytest.mark.parametrize("command", ["fit", "evaluate", "predict", "convert", "list", "info"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0 and "--backend" in capsys.readouterr().out


def test_every_fit_config_field_is_a_fit_flag_with_its_default():
    args = vars(cli._parser().parse_args(["fit"]))
    config = FitConfig()
    assert {field.name: args[field.name] for field in dataclasses.fields(FitConfig)} == (
        config.to_dict()
    )


def test_fit_flags_set_their_fields_and_reach_fit(monkeypatch):
    received = {}

    def fit(model, dataset, keras_callbacks=(), **options):
        received.update(options)
        return types.SimpleNamespace(output_dir=None)  # as a process other than the chief

    monkeypatch.setattr(training, "fit", fit)
    argv = "fit --epochs 3 --test-fraction 0.3 --verbose 0 --distribute data --devices 1"
    argv += " --model-arg hidden_units=[4,2] --model-arg activation=gelu --deterministic"
    argv += " --gpu-memory all"
    assert cli._fit(cli._parser().parse_args(argv.split())) == 0
    expected = dataclasses.replace(
        FitConfig(),
        epochs=3,
        test_fraction=0.3,
        verbose=0,
        distribute="data",
        devices=1,
        model_kwargs={"hidden_units": (4, 2), "activation": "gelu"},
        deterministic=True,
        gpu_memory="all",
        output_dir=os.path.join("runs", "simple_cnn-digits"),
    )
    assert received == expected.to_dict()


@pytest.mark.parametrize(
    "args, message",
    [
        (["fit", "--model", "resnet"], "error: Unknown model 'resnet'"),
        (["fit", "--dataset", "imagenet"], "error: Unknown data set 'imagenet'"),
        (
            ["fit", "--epochs", "0"],
            "error: Expected epochs to be a positive int. Received: epochs=0",
        ),
        (["fit", "--optimizer", "nope"], "error: Unknown optimizer 'nope'"),
        (
            ["fit", "--backend", "theano"],
            "error: Expected a backend from tensorflow, torch, jax. Received: backend='theano'",
        ),
        (["info", "mlp2"], "error: Unknown model 'mlp2'. Did you mean 'mlp'?"),
        (
            ["fit", "--model", "mlp", "--model-arg", "hidden_units=5"],
            "error: mlp expects hidden_units to be a tuple of positive ints. "
            "Received: hidden_units=5",
        ),
        (
            ["fit", "--model", "mlp", "--model-arg", "activation=relux"],
            "error: mlp expects activation to be a Keras activation",
        ),
        (
            ["fit", "--model", "transformer_classifier", "--dataset", "sequence_order"]
            + ["--model-arg", "dropout=5"],
            "error: transformer_classifier expects dropout to be a number in [0, 1)",
        ),
        (
            ["fit", "--model", "distiller", "--model-arg", "temperature=null"],
            "error: distiller expects temperature to be a positive number. "
            "Received: temperature=None",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where fit's default --output-dir, runs/..., would go
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not os.listdir(tmp_path)


def test_a_model_arg_that_starts_as_json_must_parse(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        cli.main(["fit", "--model", "mlp", "--model-arg", "hidden_units=[512,"])
    assert exit.value.code == 2
    assert capsys.readouterr().err == (
        "error: argument --model-arg: expected VALUE to be JSON, received "
        "'hidden_units=[512,': Expecting value (character 5 of VALUE) "
        "(see python -m training fit --help)\n"
    )
    assert not os.listdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        cli.main(["fit", "--epochs", "many"])
    assert exit.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_wrong_input_shape_is_one_line(trained, capsys):
    assert (
        cli.main(["evaluate", "--model-path", str(trained / "model.keras"), "--dataset", "blobs"])
        == 2
    )
    assert (
        "expects inputs of shape (8, 8, 1). Received: blobs with inputs of shape (2,)"
        in capsys.readouterr().err
    )


def test_bad_backend_from_the_environment_in_a_fresh_process():
    result = run_cli("list", env={"KERAS_BACKEND": "theano"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: Expected a backend from tensorflow, torch, jax. Received: KERAS_BACKEND='theano'"
    )


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's CPU convolutions")
def test_tensorflow_started_by_training_runs_channels_first_in_a_fresh_process():
    script = (
        "from training import backends\n"
        "backends.select('tensorflow')\n"
        "import keras, numpy as np, zoo\n"
        "keras.config.set_image_data_format('channels_first')\n"
        "net = zoo.create_model('simple_cnn', input_shape=(1, 8, 8), num_classes=3)\n"
        "print(net.predict(np.zeros((2, 1, 8, 8), 'float32'), verbose=0).shape)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "(2, 3)"


def test_cli_defaults_reach_97_percent_on_digits(tmp_path):
    """The README's main job: simple_cnn on digits with the CLI defaults,
    where `--backend` wins over `$KERAS_BACKEND`."""
    backend = keras.backend.backend()
    other = next(name for name in BACKENDS if name != backend)
    args = ["--backend", backend, "--output-dir", str(tmp_path), "--verbose", "2"]
    result = run_cli(
        "fit", "--model", "simple_cnn", "--dataset", "digits", *args, env={"KERAS_BACKEND": other}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Epoch 30/30" in result.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert json.loads(result.stdout.strip().splitlines()[-1]) == metrics
    assert metrics["test_accuracy"] >= 0.97
    assert json.loads((tmp_path / "config.json").read_text())["backend"] == backend
    count, why = backends.threads()  # the CLI's environment is this one
    assert result.stderr.splitlines().count(f"threads: {count} ({why})") == 1, result.stderr


def _unsafe_or_broken_model(kind, trained, path):
    """A model file that `evaluate` and `predict` must refuse; a Lambda one
    writes $ZOO_SENTINEL if Keras builds it."""
    import keras

    if kind == "lambda":
        inputs = keras.Input((8, 8, 1))
        payload = lambda t: (open(os.environ["ZOO_SENTINEL"], "w").close(), t)[1]  # noqa: E731
        keras.Model(inputs, keras.layers.Lambda(payload)(inputs)).save(path)
        os.remove(os.environ["ZOO_SENTINEL"])  # building it ran the payload once
    elif kind == "not_a_zip":
        path.write_bytes(b"not a zip file")
    else:  # a trained model changed after fit wrote it and its sha256
        data = bytearray((trained / "model.keras").read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(data)
        path.with_name("model.keras.sha256").write_bytes(
            (trained / "model.keras.sha256").read_bytes()
        )
    return path


@pytest.mark.parametrize("command", [["evaluate"], ["predict", "--dataset", "digits"]])
@pytest.mark.parametrize("kind", ["lambda", "not_a_zip", "tampered"])
def test_unsafe_or_broken_model_files_are_one_line_and_exit_2(
    command, kind, trained, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ZOO_SENTINEL", str(tmp_path / "sentinel"))
    path = _unsafe_or_broken_model(kind, trained, tmp_path / "model.keras")
    before = sorted(os.listdir(tmp_path))
    assert cli.main([command[0], "--model-path", str(path), *command[1:]]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"error: Refusing {str(path)!r}") and err.count("\n") == 1
    assert not (tmp_path / "sentinel").exists() and sorted(os.listdir(tmp_path)) == before


def test_fit_writes_a_sha256_sidecar_for_its_model(trained):
    import hashlib

    digest = hashlib.sha256((trained / "model.keras").read_bytes()).hexdigest()
    assert (trained / "model.keras.sha256").read_text() == f"{digest}  model.keras\n"


def test_a_lambda_model_is_refused_in_a_fresh_process(trained, tmp_path, monkeypatch):
    sentinel = tmp_path / "sentinel"
    monkeypatch.setenv("ZOO_SENTINEL", str(sentinel))
    path = _unsafe_or_broken_model("lambda", trained, tmp_path / "model.keras")
    result = run_cli("evaluate", "--model-path", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: Refusing {str(path)!r}")
    assert not sentinel.exists()


def test_evaluate_takes_the_run_s_settings_and_says_so(trained, capsys):
    model_path = str(trained / "model.keras")
    assert cli.main(["evaluate", "--model-path", model_path]) == 0
    out, err = capsys.readouterr()
    assert err == (
        f"Using the run's settings in {trained / 'config.json'}: data set 'digits', seed 0\n"
    )
    assert json.loads(out) == pytest.approx(json.loads((trained / "metrics.json").read_text()))


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["evaluate", "--seed", "5"],
            "error: Refusing to test on 'digits' split with seed 5: the model trained on it split "
            "with seed 0",
        ),
        (
            ["evaluate", "--dataset", "digits_segmentation"],
            "error: Model 'mlp' has outputs of shape (None, 10), which cannot be scored against "
            "the targets of 'digits_segmentation' (of shape (8, 8), 11 classes)",
        ),
        (
            ["predict", "--dataset", "digits", "--batch-size", "0"],
            "error: Expected batch_size to be a positive int. Received: batch_size=0",
        ),
        (["predict", "--dataset", "digits", "--batch-size", "-5"], "batch_size=-5"),
        (["predict", "--input", "EMPTY"], "error: Expected at least one input sample"),
    ],
)
def test_a_mistake_with_a_saved_model_is_one_line_and_exit_2(
    args, message, trained, tmp_path, capsys
):
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 8, 1), "float32"))
    args = [str(tmp_path / "empty.npy") if a == "EMPTY" else a for a in args]
    assert cli.main([args[0], "--model-path", str(trained / "model.keras"), *args[1:]]) == 2
    out, err = capsys.readouterr()
    assert out == "" and message in err and err.count("\n") == 1, err


def test_allow_training_data_scores_another_split(trained, capsys):
    args = ["evaluate", "--model-path", str(trained / "model.keras"), "--seed", "5"]
    assert cli.main([*args, "--allow-training-data"]) == 0
    assert "seed 5" in capsys.readouterr().err


def test_fit_continues_a_saved_model_and_records_it(trained, tmp_path):
    model_path = str(trained / "model.keras")
    args = ["fit", "--model", model_path, "--epochs", "1", "--verbose", "0"]
    assert cli.main([*args, "--output-dir", str(tmp_path)]) == 0
    before = zoo.load_model(model_path).optimizer.iterations
    after = zoo.load_model(tmp_path / "model.keras").optimizer.iterations
    assert int(after) == int(before) * 3 // 2  # one epoch on top of two, same optimizer
    source = json.loads((tmp_path / "config.json").read_text())["model_source"]
    assert source["path"] == model_path and len(source["sha256"]) == 64


def test_ctrl_c_says_how_to_resume(tmp_path, monkeypatch, capsys):
    import training.loop

    def killed(model, dataset, output_dir, **options):
        (tmp_path / "checkpoint").mkdir()
        (tmp_path / "checkpoint" / "latest.json").write_text('{"epoch": 3}')
        raise KeyboardInterrupt

    monkeypatch.setattr(training.loop, "fit", killed)
    assert cli.main(["fit", "--output-dir", str(tmp_path)]) == 130
    assert capsys.readouterr().err == (
        "Interrupted: run the same command again to resume from the checkpoint after epoch 3 "
        f"in {tmp_path}\n"
    )


def test_an_image_folder_trains_from_the_cli_and_evaluates_with_its_run(tmp_path, capsys):
    from images import image_folder

    folder = image_folder(tmp_path / "photos", per_class=6, size=8)
    run = tmp_path / "run"
    fit = ["fit", "--model", "mlp", "--dataset", str(folder), "--batch-size", "4"]
    assert cli.main([*fit, "--epochs", "1", "--verbose", "0", "--output-dir", str(run)]) == 0
    capsys.readouterr()
    evaluate = ["evaluate", "--model-path", str(run / "model.keras")]
    assert cli.main(evaluate) == 0
    assert f"data set {str(folder)!r}, seed 0" in capsys.readouterr().err
    (folder / "owl" / "1.png").rename(folder / "owl" / "renamed.png")
    assert cli.main(evaluate) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Refusing to test on {str(folder)!r}: it has changed since")
    assert err.count("\n") == 1


def test_with_keras_backend_unset_the_installed_backend_is_used_quietly(tmp_path):
    """In a fresh process with only this backend's framework, as nox installs
    it: Keras' keras.json names another (TensorFlow, Keras' own default), and
    nothing is printed but the choice and the models."""
    (tmp_path / "keras.json").write_text(json.dumps({"backend": "tensorflow"}))
    env = {
        k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL")
    }
    result = subprocess.run(
        [sys.executable, "-m", "training", "list", "mlp"],
        capture_output=True,
        text=True,
        env={**env, "KERAS_HOME": str(tmp_path)},
        timeout=300,
    )
    assert result.returncode == 0 and result.stdout == "mlp\n", result.stderr
    from training import backends

    installed = backends.installed()
    expected = (
        "Keras' configured backend"
        if "tensorflow" in installed
        else "the only one installed; 'tensorflow' in"
        if len(installed) == 1
        else "the first installed"
    )
    assert result.stderr.startswith(f"Backend: {installed[0]} ({expected}"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # no framework start-up lines


def _tiny_model_args(name):
    from tiny import TINY_KWARGS

    return [
        arg
        for key, value in TINY_KWARGS[name].items()
        for arg in ("--model-arg", f"{key}={json.dumps(value)}")
    ]


@pytest.fixture(scope="module")
def peer_files(tmp_path_factory):
    """A tiny model per peer and its weights as the peer writes them."""
    from tiny import TINY_KWARGS

    folder = tmp_path_factory.mktemp("peers")
    keras.utils.set_random_seed(0)
    files = {}
    for peer, name in (("torchvision", "resnet18"), ("timm", "vit_tiny")):
        model = zoo.create_model(name, **TINY_KWARGS[name])
        path = folder / f"{name}.pth"
        getattr(zoo.convert, f"to_{peer}")(model, path)
        files[peer] = (name, path)
    return files


@pytest.mark.parametrize("peer", ["torchvision", "timm"])
def test_convert_takes_a_peer_s_file_in_and_writes_it_out(peer, peer_files, tmp_path, capsys):
    name, source = peer_files[peer]
    weights = tmp_path / f"{name}.weights.h5"
    argv = ["convert", "--from", peer, "--model", name, *_tiny_model_args(name)]
    assert cli.main([*argv, "--input", str(source), "--output", str(weights)]) == 0
    assert capsys.readouterr().err == f"Wrote {weights}\n"
    from tiny import TINY_KWARGS

    model = zoo.load_weights(zoo.create_model(name, **TINY_KWARGS[name]), weights)
    zoo.save_model(model, tmp_path / "model.keras")
    back = tmp_path / f"{name}.safetensors"
    argv = ["convert", "--to", peer, "--model-path", str(tmp_path / "model.keras")]
    assert cli.main([*argv, "--output", str(back)]) == 0
    expected, received = (zoo.convert.load_state_dict(p) for p in (source, back))
    assert sorted(received) == sorted(expected)  # safetensors sorts its keys
    for key, array in expected.items():
        np.testing.assert_array_equal(received[key], array, err_msg=key)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            "--from torchvision --model resnet18 --output w.weights.h5",
            "Expected --from torchvision with --model and --input (and --model-arg if any). "
            "Received: no --input",
        ),
        (
            "--to timm --model-path m.keras --model vit_tiny --output w.safetensors",
            "Expected --to timm with --model-path. Received: --model too",
        ),
        (
            "--from torchvision --model resnet18 --input PEER --output w.safetensors",
            "Expected an --output ending in .weights.h5 for --from torchvision. "
            "Received: 'w.safetensors'",
        ),
        (
            "--from torchvision --model resnet18 --input PEER --output taken.weights.h5",
            "Expected a new --output file; 'taken.weights.h5' exists (pass --overwrite)",
        ),
        (
            "--from torchvision --model resnet18 TINY --input PEER --output w.weights.h5",
            "fc.weight: resnet18 expects shape (4, 512) (torch layout). "
            "Received: (3, 512) from 'PEER'",
        ),
    ],
    ids=["no_input", "model_with_to", "suffix", "exists", "other_classes"],
)
def test_a_convert_mistake_is_one_line_and_writes_nothing(
    args, message, peer_files, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken.weights.h5").write_text("")
    source = str(peer_files["torchvision"][1])
    tiny = [*_tiny_model_args("resnet18"), "--model-arg", "num_classes=4"]
    argv = [a for arg in args.split() for a in (tiny if arg == "TINY" else [arg])]
    argv = [source if a == "PEER" else a for a in argv]
    assert cli.main(["convert", *argv]) == 2
    assert capsys.readouterr().err == f"error: {message.replace('PEER', source)}\n"
    assert os.listdir(tmp_path) == ["taken.weights.h5"]
