"""The written-once step API, which lives in `zoo.steps` so that zoo's models
need nothing from `training`. Its names stay importable from here for code
written before it moved:

>>> from training.steps import CustomStepModel, value_and_grad
"""

from zoo.steps import CustomStepModel, OptimizerGroup, value_and_grad

__all__ = ["CustomStepModel", "OptimizerGroup", "value_and_grad"]
