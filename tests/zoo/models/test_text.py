import keras
import numpy as np
import pytest

import training
import zoo
from training.data import load_dataset
from zoo.models.text import generate


def test_sequence_order_labels_depend_on_order_alone():
    data = load_dataset("sequence_order")
    x, y = data.x_train, data.y_train
    assert x.dtype == np.int32 and data.input_shape == (32,) and data.num_classes == 2
    assert ((x == 0).sum(1) == 1).all() and ((x == 1).sum(1) == 1).all()
    np.testing.assert_array_equal(y, (np.argmax(x == 0, 1) < np.argmax(x == 1, 1)).astype(int))
    assert 0.4 < y.mean() < 0.6


def test_arithmetic_targets_are_the_next_tokens():
    data = load_dataset("arithmetic")
    np.testing.assert_array_equal(data.y_train[:, :-1], data.x_train[:, 1:])
    assert data.y_train.shape == data.x_train.shape == (len(data.x_train), 32)


@pytest.mark.parametrize("name", ["lstm_classifier", "transformer_classifier"])
def test_text_classifiers_learn_token_order(name):
    result = training.fit(name, "sequence_order", epochs=10, verbose=0)
    assert result.metrics["test_accuracy"] > 0.9


def test_mini_gpt_is_causal():
    model = zoo.create_model("mini_gpt", input_shape=(8,), vocab_size=10, num_layers=1)
    tokens = np.arange(8, dtype="int32")[None]
    changed = tokens.copy()
    changed[0, 5] = 9
    a, b = (keras.ops.convert_to_numpy(model(t)) for t in (tokens, changed))
    np.testing.assert_allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not np.allclose(a[:, 5:], b[:, 5:])


def test_mini_gpt_learns_and_generates_progressions():
    result = training.fit("mini_gpt", "arithmetic", epochs=10, verbose=0)
    assert result.metrics["test_accuracy"] > 0.9
    continued = generate(result.model, [[5, 8, 11, 14], [60, 62, 0, 2]], 4, temperature=0)
    np.testing.assert_array_equal(continued[:, 4:], [[17, 20, 23, 26], [4, 6, 8, 10]])


def test_sampling_repeats_with_a_seed_and_rejects_bad_arguments():
    model = zoo.create_model("mini_gpt", input_shape=(8,), vocab_size=10, num_layers=1)
    a, b = (generate(model, [1, 2], 10, temperature=1.0, seed=3) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1, 12) and a.max() < 10
    with pytest.raises(zoo.ZooError, match="empty prompt"):
        generate(model, [], 3)
    with pytest.raises(zoo.ZooError, match="temperature >= 0"):
        generate(model, [1], 3, temperature=-1)
