"""The step wrappers for the backends whose variables are stateful
(TensorFlow and PyTorch): Keras calls `train_step(data)` and the step runs as
written."""


def allow_xla(layers):
    """Leaves each layer's `supports_jit` as Keras declares it: on TensorFlow,
    XLA stays as Keras chooses for these layers, and torch runs eagerly unless
    asked (`zoo.steps._jax.allow_xla`)."""


class StepMixin:
    def train_step(self, data):
        logs = self.fit_step(data)
        self.optimizer.iterations.assign_add(1)
        return logs

    def test_step(self, data):
        return self.evaluate_step(data)
