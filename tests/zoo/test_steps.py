"""zoo.steps: value_and_grad and OptimizerGroup on the backend under test."""

import pathlib
import re

import keras
import numpy as np
import pytest
from keras import ops

from zoo.steps import CustomStepModel, OptimizerGroup, value_and_grad

README = pathlib.Path(__file__).parents[2] / "README.md"


def numpy(x):
    return ops.convert_to_numpy(x)


def test_gradient_with_respect_to_variables():
    w = keras.Variable([1.0, 2.0, 3.0])
    value, (grad,) = value_and_grad(lambda: ops.sum(w * w), [w])
    assert float(numpy(value)) == 14.0
    np.testing.assert_allclose(numpy(grad), [2.0, 4.0, 6.0])


def test_gradient_with_respect_to_a_tensor():
    x = ops.convert_to_tensor([1.0, -2.0])
    value, grad = value_and_grad(lambda t: ops.sum(t**3), x)
    np.testing.assert_allclose(numpy(grad), [3.0, 12.0])


def test_a_gradient_of_a_gradient():
    # g(w) = sum((d/dx sum(w x^2))^2) = sum(4 w^2 x^2), so dg/dw = 8 w x^2.
    w = keras.Variable([0.5, -1.0])
    x = ops.convert_to_tensor([2.0, 3.0])

    def penalty():
        _, dx = value_and_grad(lambda t: ops.sum(w * t**2), x)
        return ops.sum(dx**2)

    value, (grad,) = value_and_grad(penalty, [w])
    np.testing.assert_allclose(float(numpy(value)), 4 * (0.25 * 4 + 1.0 * 9), rtol=1e-6)
    np.testing.assert_allclose(numpy(grad), [8 * 0.5 * 4, 8 * -1.0 * 9], rtol=1e-6)


def test_aux_outputs_come_back():
    w = keras.Variable([2.0])
    (value, aux), (grad,) = value_and_grad(lambda: (ops.sum(w**2), w * 10), [w], has_aux=True)
    assert float(numpy(aux)[0]) == 20.0 and float(numpy(grad)[0]) == 4.0


def test_assignments_inside_fn_are_kept():
    bn = keras.layers.BatchNormalization()
    bn.build((None, 2))
    x = ops.convert_to_tensor([[1.0, 2.0], [3.0, 6.0]])
    value_and_grad(lambda: ops.sum(bn(x, training=True)), bn.trainable_variables)
    np.testing.assert_allclose(numpy(bn.moving_mean), [0.02, 0.04], rtol=1e-5)


@pytest.mark.parametrize(
    "wrt, message",
    [
        ([], "non-empty list"),
        ([keras.Variable([1.0]), ops.ones((1,))], "Keras variables, or tensors"),
        ([keras.Variable([1.0], trainable=False)], "Expected trainable variables"),
    ],
)
def test_bad_wrt_is_one_line(wrt, message):
    with pytest.raises(ValueError, match=message):
        value_and_grad(lambda *args: ops.sum(ops.ones((1,))), wrt)


def test_optimizer_group_serialises_its_members():
    group = OptimizerGroup(
        {"a": keras.optimizers.Adam(2e-4, beta_1=0.5), "b": keras.optimizers.SGD(0.1)}
    )
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(group))
    assert isinstance(restored, OptimizerGroup)
    assert restored["a"].get_config() == group["a"].get_config()
    assert restored["b"].get_config() == group["b"].get_config()
    with pytest.raises(ValueError, match=r"group\[name\].apply"):
        group.apply([], [])


def test_compile_wants_one_optimizer_per_group():
    class TwoParts(CustomStepModel):
        optimizer_groups = ("left", "right")

    with pytest.raises(ValueError, match=r"one optimizer for each of \['left', 'right'\]"):
        TwoParts().compile(optimizer={"left": "adam"})


def test_the_readme_example_trains():
    """The README's custom-step example, run exactly as printed there."""
    code = re.search(r"<!-- custom-step-example -->\n```python\n(.*?)```", README.read_text(), re.S)
    namespace = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    losses = namespace["history"].history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert namespace["test"]["loss"] < losses[0]


def test_layer_losses_count_inside_value_and_grad():
    net = keras.Sequential([keras.Input((2,)), keras.layers.ActivityRegularization(l2=1.0)])
    x = ops.convert_to_tensor([[1.0, 1.0]])
    dense = keras.layers.Dense(2, kernel_initializer="ones", use_bias=False)
    model = keras.Sequential([keras.Input((2,)), dense, net])

    def loss():
        model(x)
        return ops.sum(model.losses)

    value, _ = value_and_grad(loss, dense.trainable_variables)
    assert float(numpy(value)) == 8.0  # (1+1)^2 + (1+1)^2


def test_a_learning_rate_callback_cannot_silently_miss_the_group():
    group = OptimizerGroup({"a": keras.optimizers.Adam(), "b": keras.optimizers.Adam()})
    with pytest.raises(AttributeError, match=r"group\[name\].learning_rate"):
        group.learning_rate = 0.5
    with pytest.raises(KeyError, match=r"optimizers \['a', 'b'\]. Received: 'c'"):
        group["c"]


def test_training_steps_still_names_the_api():
    import training.steps

    assert training.steps.CustomStepModel is CustomStepModel
    assert training.steps.OptimizerGroup is OptimizerGroup
    assert training.steps.value_and_grad is value_and_grad
