"""Every registered model through the shared harness."""

import pytest
from harness import run_model_test
from tiny import TINY_KWARGS

import zoo


def test_every_registered_model_has_tiny_kwargs():
    assert sorted(TINY_KWARGS) == zoo.list_models()


@pytest.mark.parametrize("name", zoo.list_models())
def test_model(name, tmp_path):
    run_model_test(name, TINY_KWARGS[name], tmp_path)


def test_families_keep_their_names_from_before_zoo_models():
    import zoo.text
    from zoo.text import generate

    from zoo import resnet

    assert zoo.text is zoo.models.text and resnet is zoo.models.resnet
    assert generate is zoo.models.text.generate
    assert {zoo.model_family(name) for name in zoo.list_models()} == set(zoo.models.__all__)
