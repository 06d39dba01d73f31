"""Custom training steps written once, run on TensorFlow, PyTorch and JAX.

Keras' guides write a custom `train_step` three times: with `tf.GradientTape`,
with torch's `backward()`, and for JAX as a stateless `train_step(state, data)`.
Here a model subclasses `CustomStepModel` and writes `fit_step(data)` (and
`evaluate_step(data)`) once, in stateful style:

```python
class Regressor(CustomStepModel):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, x):
        return self.net(x)

    def fit_step(self, data):
        x, y = data
        variables = self.net.trainable_variables
        loss, grads = value_and_grad(lambda: ops.mean((self.net(x) - y) ** 2), variables)
        self.optimizer["model"].apply(grads, variables)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}
```

`fit` compiles it: XLA under `jax.jit`, `tf.function` on TensorFlow. On JAX the
step runs inside a `StatelessScope` over the whole training state (weights,
BatchNorm statistics, seed generators, every optimizer's slots, metrics), and the
new values are read back from it, so no update is dropped.

The backend-specific code is in `_tensorflow.py`, `_torch.py` and `_jax.py`,
one of which is chosen when this module is imported. It lives in `zoo` because
zoo's GANs, VAE, SimCLR and distiller are written with it, and `zoo` imports
nothing from `training`; `training.steps` re-exports it.
"""

import importlib

import keras

from zoo import saving
from zoo.steps.optimizers import OptimizerGroup

_backend = importlib.import_module(f"zoo.steps._{keras.backend.backend()}")

#: `value_and_grad(fn, wrt, has_aux=False) -> (value, grads)`.
#:
#: `wrt` is a list of trainable Keras variables, and `fn()` takes no argument;
#: or a tensor (or a nested structure of tensors), and `fn(wrt)` takes it.
#: Calls nest: a gradient taken inside `fn` (a gradient penalty) is itself
#: differentiated. With `has_aux=True`, `fn` returns `(value, aux)` and the
#: result is `((value, aux), grads)`.
value_and_grad = _backend.value_and_grad

#: `allow_xla(layers)`: on JAX, marks Keras layers that declare
#: `supports_jit = False` but compile under `jax.jit` as compiling, so that a
#: model holding them keeps XLA; elsewhere each layer keeps what it declares.
allow_xla = _backend.allow_xla


class CustomStepModel(_backend.StepMixin, keras.Model):
    """A `keras.Model` whose training step is written once for every backend.

    Subclasses implement `fit_step(data)` and `evaluate_step(data)`, each
    returning a dict of logs, and may set `optimizer_groups`: the attribute names
    of the sub-models that get an optimizer of their own. `compile(optimizer=...)`
    takes one optimizer (copied for each group) or a dict from group name to
    optimizer; the step reaches them as `self.optimizer[name]`.
    """

    #: The optimizers the model trains with: attribute names of sub-models that
    #: each get their own optimizer, or a dict from an optimizer's name to the
    #: attribute names of the sub-models it updates. The default, `("model",)`,
    #: is one optimizer over all trainable variables.
    optimizer_groups = ("model",)

    def default_optimizer(self):
        """The optimizer this model trains best with, or `None` for the caller's
        default. `training.fit` uses it when neither an optimizer nor a learning
        rate is given."""
        return None

    def fit_step(self, data):
        raise NotImplementedError(f"{type(self).__name__} must implement fit_step(data)")

    def evaluate_step(self, data):
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate_step(data)")

    def compile(self, optimizer="adam", **kwargs):
        if not isinstance(optimizer, OptimizerGroup):
            optimizer = OptimizerGroup(self._optimizers_per_group(optimizer))
        expected = sorted(self._group_variables())
        if sorted(optimizer.members) != expected:
            raise ValueError(
                f"{type(self).__name__} expects optimizers named {expected}. "
                f"Received: {sorted(optimizer.members)}"
            )
        optimizer.assign_variables(self._group_variables)
        # The step applies gradients itself; Keras' automatic loss scaling would
        # wrap the group in a LossScaleOptimizer that the step cannot index.
        kwargs.setdefault("auto_scale_loss", False)
        super().compile(optimizer=optimizer, **kwargs)

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # The sub-models that `__init__` builds take Keras' global dtype policy,
        # not the model's: build them with the one the model was saved with.
        policy = keras.dtype_policies.get(config.get("dtype") or keras.config.dtype_policy())
        with saving.dtype_policy(policy):
            return super().from_config(config, custom_objects=custom_objects)

    def compile_from_config(self, config):
        # Keras skips this for models that override compile; the body is its own.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def group_variables(self, name):
        """The trainable variables that the optimizer `name` updates."""
        return self._group_variables()[name]

    def _group_variables(self):
        groups = self.optimizer_groups
        if isinstance(groups, (tuple, list)) and tuple(groups) == ("model",):
            return {"model": self.trainable_variables}
        if not isinstance(groups, dict):
            groups = {name: (name,) for name in groups}
        return {
            name: [v for attr in attrs for v in getattr(self, attr).trainable_variables]
            for name, attrs in groups.items()
        }

    def _optimizers_per_group(self, optimizer):
        if isinstance(optimizer, dict):
            if sorted(optimizer) != sorted(self.optimizer_groups):
                raise ValueError(
                    f"{type(self).__name__} expects one optimizer for each of "
                    f"{list(self.optimizer_groups)}. Received: {sorted(optimizer)}"
                )
            return {name: keras.optimizers.get(opt) for name, opt in optimizer.items()}
        template = keras.optimizers.get(optimizer)
        return {
            name: type(template).from_config(template.get_config())
            for name in self.optimizer_groups
        }


__all__ = ["CustomStepModel", "OptimizerGroup", "value_and_grad"]
