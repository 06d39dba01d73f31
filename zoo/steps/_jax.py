import jax
from keras import StatelessScope, tree
from keras.src.backend.common.stateless_scope import get_stateless_scope

from zoo.steps._common import pack_grads, split_wrt

__all__ = ["StepMixin", "allow_xla", "value_and_grad"]


def allow_xla(layers):
    """Marks `layers` as compiling under `jax.jit`.

    Keras 3.15 declares its affine augmentation layers (`RandomTranslation`,
    `RandomZoom`) `supports_jit = False` on every backend, and one such layer
    turns XLA off for the whole model: on JAX its step then runs op by op, each
    op compiled on its own (about 670 compiles in one SimCLR fit). On JAX they
    are `jax.numpy` code that compiles and draws the same numbers (a compiled
    SimCLR step gave the eager step's losses and weights for 10 steps).
    """
    for layer in layers:
        layer.supports_jit = True


class StepMixin:
    """Keras' JAX trainer calls `train_step(state, data)` under `jax.jit`.

    The step opens a `StatelessScope` over the whole state, runs the stateful
    `fit_step`, and reads every variable's new value back, as Keras' own
    trainer does for metrics.
    """

    def train_step(self, state, data):
        groups = (
            self.trainable_variables,
            self.non_trainable_variables,
            self.optimizer.variables,
            self.metrics_variables,
        )

        def step():
            logs = self.fit_step(data)
            self.optimizer.iterations.assign_add(1)
            return logs

        return _run_stateless(step, groups, state)

    def test_step(self, state, data):
        groups = (self.trainable_variables, self.non_trainable_variables, self.metrics_variables)
        return _run_stateless(lambda: self.evaluate_step(data), groups, state)


def _run_stateless(step, groups, state):
    mapping = [
        (variable, value)
        for variables, values in zip(groups, state, strict=True)
        for variable, value in zip(variables, values, strict=True)
    ]
    with StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
        logs = step()
    new_state = tuple(
        [scope.get_current_value(variable) for variable in variables] for variables in groups
    )
    return logs, new_state


class _RecordingScope(StatelessScope):
    """A StatelessScope that starts from the enclosing scope's values and records
    which variables `fn` assigns (BatchNorm statistics, seeds, metrics)."""

    def __init__(self, values):
        # collect_losses: layers' add_loss (activity regularizers) still count.
        super().__init__(collect_losses=True)
        self.state_mapping = values
        self.assigned = {}

    def add_update(self, update):
        super().add_update(update)
        self.assigned[id(update[0])] = update[0]


def value_and_grad(fn, wrt, has_aux=False):
    leaves, by_variables = split_wrt(wrt)
    outer = get_stateless_scope()
    base = dict(outer.state_mapping) if outer else {}
    assigned = {}

    def pure(values):
        mapping = dict(base)
        if by_variables:
            mapping.update({id(v): x for v, x in zip(leaves, values, strict=True)})
        with _RecordingScope(mapping) as scope:
            out = fn() if by_variables else fn(tree.pack_sequence_as(wrt, values))
        assigned.update(scope.assigned)
        updates = {key: scope.state_mapping[key] for key in scope.assigned}
        value, aux = out if has_aux else (out, None)
        return value, (aux, updates)

    initial = [leaf.value for leaf in leaves] if by_variables else leaves
    (value, (aux, updates)), grads = jax.value_and_grad(pure, has_aux=True)(initial)
    # Variables fn assigned get their new values in the enclosing scope (or for
    # real, outside any step), so the updates are not lost with pure's trace.
    for key, variable in assigned.items():
        variable.assign(updates[key])
    out = (value, aux) if has_aux else value
    return out, pack_grads(wrt, grads, by_variables)
