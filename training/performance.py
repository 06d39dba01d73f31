"""How `training.fit` compiles a model for speed, per backend: the settings
`python -m training bench` measured fastest against native loops on CPU.

`fit` (through `loop.compile_for_task`) and the benchmark both read them from
here, so the benchmark measures exactly what `fit` does.
"""


def compile_options(net) -> dict:
    """Extra `net.compile` arguments for this backend."""
    return {}
