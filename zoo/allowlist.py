"""What a model file's config may name: an allow-list, checked before Keras
reads the config.

Keras rebuilds a model from `config.json` by resolving each entry's
`registered_name`, `module` and `class_name` (`serialization_lib.
_retrieve_class_or_fn`): the registry of custom objects first, then Keras'
export table, which also holds plain functions and Operations such as `Switch`,
then, for any `keras...` module, by importing it. Functional reconstruction then
calls each operation with the arguments stored in its `inbound_nodes`. So a
config can call any Keras function with arguments of its choosing, unless every
entry is checked first.

`check_config` finds what Keras 3.15 would resolve each entry to, in Keras'
order but without importing anything, and allows only:

- Keras' public layer, loss, metric, optimizer, learning-rate schedule,
  initializer, regularizer, constraint and dtype-policy classes, and `Model`,
  `Sequential` and `Functional`; but no Operation that is not a Layer and none
  of the layers that run stored code or load other files (`_CODE`);
- the classes that `zoo` and `training` register;
- functions from Keras' activations, losses and metrics only;
- values: arrays (`__numpy__`, `__tensor__`) of numeric dtypes, together at
  most `MAX_ARRAY_BYTES`, and in `inbound_nodes` only tensor references,
  numbers, strings, `None`, and lists and dicts of those.

Strings are data: Keras resolves them only in its own namespaces and the
registry, and a string naming a registered object outside the allow-list is
refused too.
"""

import inspect
import sys

import keras
from keras.src import api_export
from keras.src.models.functional import Functional  # no public alias in Keras 3
from keras.src.saving import serialization_lib

from zoo.errors import refuse

# Keras configs nest about 12 deep (a Functional model in a compiled model);
# Keras deserializes recursively, so a deeper one is refused before it does.
MAX_JSON_DEPTH = 64
# All `__numpy__` and `__tensor__` values of a config together, decoded.
MAX_ARRAY_BYTES = 1 << 24  # 16 MiB

_CLASS_NAMESPACES = (
    keras.layers,
    keras.losses,
    keras.metrics,
    keras.optimizers,
    keras.optimizers.schedules,
    keras.initializers,
    keras.regularizers,
    keras.constraints,
    keras.dtype_policies,
)
_FUNCTION_NAMESPACES = (keras.activations, keras.losses, keras.metrics)
# Each namespace's own lookup functions, which deserialize what they are given.
_LOOKUPS = ("get", "serialize", "deserialize")
_PACKAGES = ("zoo", "training")
# Public classes that are not allowed, and the names Keras gives stored code.
_CODE = {
    "Lambda": "a Lambda layer, which runs code stored in the file",
    "TorchModuleWrapper": "a TorchModuleWrapper, which unpickles code",
    "TFSMLayer": "a TFSMLayer, which loads a TensorFlow program from another path",
    "JaxLayer": "a JaxLayer, which wraps arbitrary functions",
    "FlaxLayer": "a FlaxLayer, which wraps arbitrary functions",
    "__lambda__": "a Python lambda, which runs code stored in the file",
    "__typespec__": "a TensorFlow TypeSpec, which names arbitrary classes",
}
# Bytes per element of the dtypes an array value may have.
_ITEMSIZES = {
    "bool": 1,
    "int8": 1,
    "uint8": 1,
    "int16": 2,
    "uint16": 2,
    "float16": 2,
    "bfloat16": 2,
    "int32": 4,
    "uint32": 4,
    "float32": 4,
    "int64": 8,
    "uint64": 8,
    "float64": 8,
    "complex64": 8,
    "complex128": 16,
}
_VALUES = {"__keras_tensor__", "__numpy__", "__tensor__", "__bytes__", "__slice__", "__ellipsis__"}
_LOOKUP_LAYERS = {"StringLookup", "IntegerLookup", "TextVectorization"}


def _keras_classes():
    """Keras' allowed classes: public modelling classes, with the class each
    public optimizer is an instance of on this backend (torch's own `Adam`,
    which Keras saves under its own module)."""
    public = {keras.Model, keras.Sequential, Functional}
    for namespace in _CLASS_NAMESPACES:
        public |= {value for value in vars(namespace).values() if inspect.isclass(value)}
    allowed = {
        cls
        for cls in public
        if cls.__name__ not in _CODE
        and (issubclass(cls, keras.Layer) or not issubclass(cls, keras.Operation))
    }
    optimizers = [cls for cls in allowed if issubclass(cls, keras.optimizers.Optimizer)]
    return frozenset(allowed | {type(cls.__new__(cls)) for cls in optimizers})


def _keras_functions():
    return frozenset(
        value
        for namespace in _FUNCTION_NAMESPACES
        for name, value in vars(namespace).items()
        if inspect.isfunction(value) and name not in _LOOKUPS
    )


# Found once, at import, so that checking a file imports nothing.
_KERAS_CLASSES = _keras_classes()
_FUNCTIONS = _keras_functions()


def _registered_classes():
    """The classes `zoo` and `training` register, as registered now."""
    return {
        value
        for key, value in keras.saving.get_custom_objects().items()
        if key.split(">")[0] in _PACKAGES
        and inspect.isclass(value)
        and value.__module__.split(".")[0] in _PACKAGES
    }


def check_config(config, path) -> None:
    """Raises a `ZooError` unless every entry of a model config, at any depth,
    is data or an allowed class or function (see the module docstring)."""
    classes = _KERAS_CLASSES | _registered_classes()
    array_bytes = 0
    stack = [(config, 1, False)]  # (node, depth, inside inbound_nodes)
    while stack:
        node, depth, in_nodes = stack.pop()
        if depth > MAX_JSON_DEPTH:
            refuse(path, f"its config nests deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(node, list):
            stack.extend((item, depth + 1, in_nodes) for item in node)
        elif isinstance(node, dict):
            if "class_name" in node:
                if in_nodes and node["class_name"] != "__keras_tensor__":
                    refuse(
                        path,
                        f"its inbound_nodes pass a {node['class_name']!r:.80} to a layer call; "
                        "expected tensors, numbers, strings and None",
                    )
                array_bytes += _check_entry(node, classes, path)
                if array_bytes > MAX_ARRAY_BYTES:
                    refuse(path, f"its config's arrays hold more than {MAX_ARRAY_BYTES} bytes")
            stack.extend((v, depth + 1, in_nodes or k == "inbound_nodes") for k, v in node.items())
        elif isinstance(node, str):
            registered = keras.saving.get_registered_object(node)
            if registered is not None and registered not in classes:
                refuse(path, f"its config names {node!r}, a registered object outside the zoo")


def _check_entry(node, classes, path) -> int:
    """Refuses an entry that is neither an allowed object nor a value; returns
    the bytes its value decodes to."""
    class_name, module = node["class_name"], node.get("module")
    if not isinstance(class_name, str):
        refuse(path, f"its config has a class_name of type {type(class_name).__name__}")
    if class_name in _CODE:
        refuse(path, f"its config holds {_CODE[class_name]}")
    if class_name in _VALUES:
        return _value_bytes(node, path)
    if not isinstance(node.get("shared_object_id", 0), int):
        refuse(path, "its config has a shared_object_id that is not an integer")
    if class_name == "function":
        _check_function(node, path)
        return 0
    dotted = f"{module}.{class_name}"
    found = _resolve(node)
    if not found:
        refuse(
            path,
            f"its config names class {dotted!r}, which Keras would have to import or cannot "
            "find; expected Keras or zoo classes",
        )
    registered = node.get("registered_name", class_name)
    if (
        registered not in (None, class_name)
        and keras.saving.get_registered_object(registered) is None
    ):
        refuse(path, f"its config names {registered!r:.100}, which no Keras or zoo class registers")
    [value] = found
    if value not in classes or value.__name__ != class_name:
        refuse(path, f"its config names {dotted!r}, {_kind(value)}")
    inner = node.get("config")
    vocabulary = inner.get("vocabulary") if isinstance(inner, dict) else None
    if class_name in _LOOKUP_LAYERS and isinstance(vocabulary, str):
        refuse(path, f"its {class_name} reads a vocabulary file {vocabulary!r}")
    return 0


def _check_function(node, path):
    name = node.get("config")
    found = _resolve(node)
    if (
        node.get("registered_name") not in (None, "function", name)
        or not found
        or not set(found) <= _FUNCTIONS
    ):
        dotted = f"{node.get('module')}.{name}"
        refuse(
            path,
            f"its config names the function {dotted!r:.200}; expected a Keras activation, "
            "loss or metric",
        )


def _resolve(node) -> list:
    """What Keras would resolve an object entry to, found as
    `serialization_lib._retrieve_class_or_fn` finds it but without importing
    anything: `[]` where Keras would import a module or find nothing."""
    module, function = node.get("module"), node["class_name"] == "function"
    name = node.get("config") if function else node["class_name"]
    key = name if function else node.get("registered_name", name)
    if not isinstance(module, str) or not isinstance(name, str):
        return []
    if key is not None and not isinstance(key, str):
        return []
    registered = keras.saving.get_registered_object(key)
    if registered is not None:
        return [registered]
    if module == "keras" or module.startswith("keras."):
        exported = api_export.get_symbol_from_name(f"{module}.{name}")
        if exported is not None:
            return [exported]
    if function and module == "builtins":
        # Keras takes the first found in a frozenset's order, which varies from
        # run to run: every one must be allowed.
        candidates = (f"keras.{part}.{name}" for part in serialization_lib.BUILTIN_MODULES)
        return [f for f in map(api_export.get_symbol_from_name, candidates) if f is not None]
    if module.split(".")[0] == "keras" and module in sys.modules:
        # Keras imports the module and takes the name from it; an imported
        # module imports nothing more.
        value = getattr(sys.modules[module], "__dict__", {}).get(name)
        return [] if value is None else [value]
    return []


def _kind(value) -> str:
    if not inspect.isclass(value):
        return "a function where a class is expected"
    if issubclass(value, keras.Operation) and not issubclass(value, keras.Layer):
        return "an Operation that is not a Layer, which Keras calls with stored arguments"
    return "a class outside the allow-list of Keras, zoo and training classes"


def _value_bytes(node, path) -> int:
    """The bytes an array value decodes to, from its element count and dtype."""
    if node["class_name"] not in ("__numpy__", "__tensor__"):
        return 0
    config = node.get("config")
    dtype = config.get("dtype") if isinstance(config, dict) else None
    if not isinstance(dtype, str) or dtype not in _ITEMSIZES:
        refuse(
            path,
            f"its config holds an array of dtype {dtype!r:.50}; expected one of "
            f"{', '.join(_ITEMSIZES)}",
        )
    elements, stack = 0, [config.get("value")]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, (bool, int, float)):
            elements += 1
        else:
            refuse(path, f"its config holds an array of {type(item).__name__}; expected numbers")
    return elements * _ITEMSIZES[dtype]
