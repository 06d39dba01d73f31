import inspect

import keras
import pytest

import zoo
from zoo import registry


def test_list_models_wildcards_and_exclude():
    assert zoo.list_models("*regressor") == ["linear_regressor", "logistic_regressor"]
    assert zoo.list_models(["mlp", "le*"]) == ["lenet5", "mlp"]
    kept = zoo.list_models("*", exclude=["*regressor", "mlp"])
    assert "lenet5" in kept and "mlp" not in kept and not [n for n in kept if "regressor" in n]
    assert len(kept) == len(zoo.list_models()) - 3
    assert zoo.list_models("no_such_*") == []


def test_unknown_model_suggests_close_names():
    with pytest.raises(
        zoo.ZooError, match=r"Unknown model 'simple_cn'\. Did you mean 'simple_cnn'"
    ):
        zoo.create_model("simple_cn")
    with pytest.raises(
        zoo.ZooError, match="Unknown model 'xyz'. Expected one of: dcgan, distiller, lenet5"
    ):
        zoo.model_info("xyz")


def test_unknown_builder_argument_is_named():
    with pytest.raises(zoo.ZooError, match="Received unknown: widths"):
        zoo.create_model("mlp", widths=(3,))


def test_registering_a_name_twice_is_refused():
    with pytest.raises(zoo.ZooError, match="'mlp' is already registered"):

        @zoo.register_model(task="classification", source="test")
        def mlp():  # noqa: F811 - the clash is the point
            pass

    assert registry._REGISTRY["mlp"].builder.__module__ == "zoo.models.mlp"


def test_unknown_task_is_refused():
    with pytest.raises(zoo.ZooError, match="Received: task='ranking'"):
        zoo.register_model(task="ranking", source="test")


@pytest.mark.parametrize("name", zoo.list_models())
def test_model_info_describes_the_default_model(name):
    info = zoo.model_info(name)
    model = zoo.create_model(name)
    assert info.name == name
    assert info.parameters + info.non_trainable_parameters == model.count_params()
    assert info.parameters > 0
    assert info.input_shape == tuple(
        inspect.signature(registry._REGISTRY[name].builder).parameters["input_shape"].default
    )
    if info.style != "subclassed":
        # Variable-length inputs (mini_gpt) declare None where the default is fixed.
        declared = tuple(model.input_shape[1:])
        assert all(d is None or d == i for d, i in zip(declared, info.input_shape, strict=True))
    assert info.task in zoo.TASKS
    assert info.style == zoo.model_style(model)
    assert info.source and info.description
    assert info.to_dict()["parameters"] == info.parameters


def test_model_styles():
    assert zoo.model_info("mlp").style == "sequential"
    assert zoo.model_info("lenet5").style == "functional"

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    assert zoo.model_style(Subclassed()) == "subclassed"


def test_load_model_needs_an_existing_keras_file(tmp_path):
    with pytest.raises(zoo.ZooError, match="Expected a path to a .keras file"):
        zoo.load_model(tmp_path / "model.h5")
    with pytest.raises(zoo.ZooError, match="No model file at"):
        zoo.load_model(tmp_path / "missing.keras")


def test_load_model_refuses_lambda_layers(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Lambda(lambda t: t * 2)(inputs))
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="(?i)unsafe|lambda"):
        zoo.load_model(tmp_path / "lambda.keras")


def test_create_model_passes_a_name_override_to_the_builder():
    assert zoo.create_model("mlp", name="digits_mlp").name == "digits_mlp"
