"""Every registered model through the shared harness, and through its table
of bad arguments."""

import pytest
from harness import run_model_test
from tiny import BAD_ARGUMENTS, TINY_KWARGS

import zoo

BAD_CASES = [
    (model, kwargs, pattern) for model, cases in BAD_ARGUMENTS.items() for kwargs, pattern in cases
]


def test_every_registered_model_has_tiny_kwargs_and_bad_arguments():
    assert sorted(TINY_KWARGS) == zoo.list_models()
    assert sorted(BAD_ARGUMENTS) == zoo.list_models()
    assert all(BAD_ARGUMENTS.values())


@pytest.mark.parametrize("name", zoo.list_models())
def test_model(name, tmp_path):
    run_model_test(name, TINY_KWARGS[name], tmp_path)


def test_families_keep_their_names_from_before_zoo_models():
    import zoo.text
    from zoo import resnet
    from zoo.text import generate

    assert zoo.text is zoo.models.text and resnet is zoo.models.resnet
    assert generate is zoo.models.text.generate
    assert {zoo.model_family(name) for name in zoo.list_models()} == set(zoo.models.__all__)


# `model`, not `name`: a bad argument fails before anything is built, so even
# the large models' cases run in the default matrix.
@pytest.mark.parametrize(
    "model, kwargs, pattern",
    BAD_CASES,
    ids=[f"{model}-{'-'.join(kwargs)}" for model, kwargs, _ in BAD_CASES],
)
def test_bad_arguments_fail_in_one_line(model, kwargs, pattern):
    with pytest.raises(zoo.ZooError, match=pattern) as error:
        zoo.create_model(model, **{**TINY_KWARGS[model], **kwargs})
    assert "\n" not in str(error.value) and "Received" in str(error.value)
