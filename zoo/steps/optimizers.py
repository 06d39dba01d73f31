"""Several optimizers as one Keras optimizer, so that a model has one
`model.optimizer` whose `variables` hold every optimizer's state."""

import keras


# Registered under `training`, where it was first defined: the .keras files
# saved since name it `training>OptimizerGroup`.
@keras.saving.register_keras_serializable(package="training")
class OptimizerGroup(keras.optimizers.Optimizer):
    """Named optimizers, each updating its own variables.

    Keras threads `model.optimizer.variables` through the JAX training state and
    saves them with the model; this group's `variables` are its own iteration
    count followed by every member's, so all of them travel and persist.

    Args:
        optimizers: a dict from group name to `keras.optimizers.Optimizer`.
        name: the group's name. Defaults to `"optimizer_group"`.

    Example:

    >>> group = OptimizerGroup({"generator": keras.optimizers.Adam(2e-4),
    ...                         "discriminator": keras.optimizers.Adam(2e-4)})
    >>> group["generator"].apply(grads, generator.trainable_variables)
    """

    def __init__(self, optimizers, name="optimizer_group", **kwargs):
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        self._members = dict(optimizers)
        self._variables_per_group = None

    def __getitem__(self, name):
        if name not in self._members:
            raise KeyError(
                f"This OptimizerGroup has optimizers {list(self._members)}. Received: {name!r}"
            )
        return self._members[name]

    # One learning rate does not describe several optimizers; as Keras'
    # MultiOptimizer, refuse rather than let a callback change nothing.
    @property
    def learning_rate(self):
        raise AttributeError(
            "An OptimizerGroup has no single learning rate; use "
            f"group[name].learning_rate with name in {list(self._members)}"
        )

    @learning_rate.setter
    def learning_rate(self, value):
        if hasattr(self, "_members"):  # the base constructor sets it first
            raise AttributeError(
                "An OptimizerGroup has no single learning rate; set "
                f"group[name].learning_rate with name in {list(self._members)}"
            )

    def finalize_variable_values(self, var_list):
        # EMA members swap in their averages at the end of fit.
        owned = self._variables_per_group() if self._variables_per_group else {}
        for name, optimizer in self._members.items():
            optimizer.finalize_variable_values(owned.get(name, var_list))
            if optimizer.use_ema:
                # Each weight now holds its average's own array: on JAX the two
                # share one buffer, which a later donated step (evaluation)
                # deletes from under the average. Give the weights copies.
                for variable in owned.get(name, var_list):
                    variable.assign(keras.ops.convert_to_numpy(variable))

    @property
    def members(self):
        return dict(self._members)

    @property
    def optimizers(self):
        """The members, as a list: Keras' `SwapEMAWeights` reaches the inner
        optimizers of a `MultiOptimizer` by this name."""
        return list(self._members.values())

    def assign_variables(self, variables_per_group):
        """Sets a callable returning `{name: variables}`, read when building."""
        self._variables_per_group = variables_per_group

    def build(self, var_list):
        if self.built:
            return
        owned = self._variables_per_group() if self._variables_per_group else {}
        for name, optimizer in self._members.items():
            optimizer.build(owned.get(name, var_list))
        super().build(var_list)

    @property
    def variables(self):
        return self._variables[:] + [
            variable for optimizer in self._members.values() for variable in optimizer.variables
        ]

    # Members save and load their own slots; the group only its own counters.
    def save_own_variables(self, store):
        for i, variable in enumerate(self._variables):
            store[str(i)] = keras.ops.convert_to_numpy(variable)

    def load_own_variables(self, store):
        for i, variable in enumerate(self._variables):
            variable.assign(store[str(i)])

    def apply(self, grads, trainable_variables=None):
        raise ValueError(
            "An OptimizerGroup applies gradients through a member: "
            f"group[name].apply(grads, variables) with name in {list(self._members)}"
        )

    def get_config(self):
        return {
            "name": self.name,
            "optimizers": {
                name: keras.optimizers.serialize(optimizer)
                for name, optimizer in self._members.items()
            },
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        optimizers = {
            name: keras.optimizers.deserialize(optimizer, custom_objects=custom_objects)
            for name, optimizer in config["optimizers"].items()
        }
        return cls(optimizers, name=config["name"])
