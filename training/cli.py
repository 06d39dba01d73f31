"""`python -m training fit|evaluate|predict|export|convert|bench|list|info`: flags in,
library calls out.

Only argparse and the backend choice run before keras is imported, so
`--backend` takes effect.
"""

import argparse
import dataclasses
import json
import os
import sys
import typing

from training import backends, bench  # neither imports keras
from training.config import (  # nor this: fit's flags come from FitConfig
    FitConfig,
    default,
    model_argument,
)
from training.formats import FORMATS

# Where the command line differs from `training.fit`: it always writes its run.
_DEFAULT_TEXT = {"output_dir": "runs/MODEL-DATASET"}


def main(argv=None) -> int:
    try:
        args = parse_args(argv)
    except ValueError as exc:
        return _fail(exc)
    try:
        return _run(args, argv)
    except KeyboardInterrupt:
        print(_interrupted(args), file=sys.stderr)
        return 130


# What a run's config.json records besides the options: read back, not set.
_RUN_RECORD = ("backend", "keras_version", "model_source", "data")


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, where `fit --config FILE` gives the defaults of the
    flags that the command line does not give."""
    args = _parser().parse_args(argv)
    if getattr(args, "config", None):
        args = _parser(fit_defaults=read_config(args.config)).parse_args(argv)
    return args


def read_config(path) -> dict:
    """`fit`'s options from a JSON or TOML file: `FitConfig` fields, `model`
    and `dataset`; a run's own `config.json` replays the run."""
    import tomllib

    try:
        with open(path, "rb") as f:
            values = tomllib.load(f) if path.endswith(".toml") else json.load(f)
    except (OSError, ValueError) as exc:
        raise ValueError(
            f"Expected a JSON or TOML file for --config. Received: {path!r} ({exc})"
        ) from exc
    fields = {field.name for field in dataclasses.fields(FitConfig)} | {"model", "dataset"}
    unknown = sorted(set(values) - fields - set(_RUN_RECORD))
    if not isinstance(values, dict) or unknown:
        raise ValueError(
            f"Expected --config to hold fit's options ({', '.join(sorted(fields))}). "
            f"Received: {path!r} with {', '.join(unknown) or type(values).__name__}"
        )
    source = values.get("model_source") or {}
    options = {key: value for key, value in values.items() if key in fields}
    if "name" in source or "path" in source:  # the zoo name or the file, not net.name
        options["model"] = source.get("name") or source["path"]
    if "path" in (values.get("data") or {}):
        options["dataset"] = values["data"]["path"]
    kwargs = options.get("model_kwargs") or {}
    options["model_kwargs"] = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return options


def _run(args, argv):
    if args.command is _bench:  # measures each backend in a process of its own
        return _bench(args)
    try:
        if args.backend == "auto" and args.command is _fit:
            args.backend = _auto_backend(args)
        if not args.backend and not os.environ.get("KERAS_BACKEND"):
            args.backend, reason = backends.default()
            print(
                f"Backend: {args.backend} ({reason}); choose one with --backend or KERAS_BACKEND",
                file=sys.stderr,
            )
        backend = backends.select(args.backend)
    except ValueError as exc:
        return _fail(exc)
    # Read by the frameworks when they start, so set before keras is imported;
    # commands without the flag share the GPU too.
    if getattr(args, "deterministic", False):
        os.environ.update(backends.deterministic_environment())
    os.environ.update(backends.gpu_memory_environment(getattr(args, "gpu_memory", "grow")))
    if _needs_torchrun(args, backend):
        return _torchrun(args.devices, sys.argv[1:] if argv is None else argv)
    with backends.quiet_startup():
        from zoo import ZooError  # imports keras, which starts the backend's framework
    from training import sharing

    args.threads_line = sharing.set_threads()  # before the framework computes anything
    try:
        return args.command(args)
    except ZooError as exc:
        return _fail(exc)


def _interrupted(args):
    """What to say on Ctrl-C: for `fit`, how to resume."""
    if getattr(args, "command", None) is not _fit:
        return "Interrupted"
    pointer = os.path.join(_output_dir(args), "checkpoint", "latest.json")
    try:
        with open(pointer) as f:
            epoch = json.load(f)["epoch"]
    except (OSError, ValueError, KeyError):
        return "Interrupted before the first checkpoint: the same command starts the run over"
    return (
        f"Interrupted: run the same command again to resume from the checkpoint after epoch "
        f"{epoch} in {_output_dir(args)}"
    )


def _output_dir(args):
    """`--output-dir`, else `runs/MODEL-DATASET`, named by files' stems for paths."""
    if args.output_dir:
        return args.output_dir

    def stem(name):
        return os.path.splitext(os.path.basename(os.path.normpath(name)))[0]

    return os.path.join("runs", f"{stem(args.model)}-{stem(args.dataset)}")


def _fit(args):
    import training

    options = {field.name: getattr(args, field.name) for field in dataclasses.fields(FitConfig)}
    output_dir = _output_dir(args)
    line = getattr(args, "threads_line", None)  # none where a test calls _fit itself
    result = training.fit(
        args.model,
        args.dataset,
        keras_callbacks=[_say_at_start(line)] if line else [],
        **{**options, "output_dir": output_dir},
    )
    if result.output_dir is None:
        return 0  # a data-parallel process other than the chief: it wrote nothing
    print(f"Wrote {output_dir}", file=sys.stderr)
    print(json.dumps(result.metrics))
    return 0


def _say_at_start(line):
    """A callback that prints `line` on stderr as training starts: after
    every check, so that a mistake is still one line."""
    import keras

    from training import distribute

    class SayAtStart(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            if distribute.is_chief():
                print(line, file=sys.stderr)

    return SayAtStart()


def _needs_torchrun(args, backend):
    """Whether `fit` asks torch for several processes and torchrun has not started them."""
    return (
        getattr(args, "command", None) is _fit
        and backend == "torch"
        and args.distribute is not None
        and (args.devices or 1) > 1
        and "LOCAL_RANK" not in os.environ
    )


def _torchrun(processes, argv) -> int:
    """Runs this command again in `processes` local processes under torchrun."""
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc-per-node={processes}", "-m", "training", *argv]
    return subprocess.run(command, check=False).returncode


def _auto_backend(args):
    from training import autobackend

    choice = autobackend.choose(
        args.model, args.dataset, batch_size=args.batch_size, model_kwargs=args.model_kwargs
    )
    print(f"Backend auto: {choice.backend} ({choice.reason})", file=sys.stderr)
    return choice.backend


def _bench(args):
    try:
        records = bench.run(
            args.models,
            args.backends,
            modes=args.modes,
            precisions=args.precision,
            batch_size=args.batch_size,
            steps=args.steps,
            repeats=args.repeats,
        )
    except (ValueError, RuntimeError) as exc:
        return _fail(exc)
    print(bench.table(records))
    if args.json:
        bench.write_json(args.json, records)
        print(f"Wrote {args.json}", file=sys.stderr)
    return 0


def _evaluate(args):
    import training

    metrics = training.evaluate(
        args.model_path, args.dataset, batch_size=args.batch_size, **_split_options(args)
    )
    print(json.dumps(metrics))
    return 0


def _predict(args):
    import numpy as np

    import training
    from zoo import ZooError

    if args.output and os.path.exists(args.output) and not args.overwrite:
        raise ZooError(f"Expected a new --output file; {args.output!r} exists (pass --overwrite)")
    if args.input:
        try:
            x = np.load(args.input, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ZooError(
                f"Expected a .npy array in --input. Received: {args.input!r} ({exc})"
            ) from exc
    else:
        x = args.dataset
    predictions = training.predict(
        args.model_path, x, batch_size=args.batch_size, **_split_options(args)
    )
    if args.output:
        from training.outputs import atomic_path

        with atomic_path(args.output) as tmp, open(tmp, "wb") as f:
            np.save(f, predictions)
        print(f"Wrote {len(predictions)} predictions to {args.output}", file=sys.stderr)
    else:
        print(json.dumps({"predictions": predictions.tolist()}))
    return 0


def _export(args):
    from training.export import export

    export(args.model_path, args.format, args.output, overwrite=args.overwrite)
    print(f"Wrote {args.output}", file=sys.stderr)
    return 0


def _convert(args):
    """Weights in from a peer's file into a `.weights.h5`, or out of a
    `.keras` model into a peer's file, through `zoo.convert`."""
    import zoo
    from zoo import ZooError

    peer = args.peer_in or args.peer_out
    given = {
        flag: value
        for flag, value in (
            ("--model", args.model),
            ("--model-arg", args.model_kwargs),
            ("--input", args.input),
            ("--model-path", args.model_path),
        )
        if value
    }
    if args.peer_in:
        direction, needed, optional = f"--from {peer}", ("--model", "--input"), ("--model-arg",)
    else:
        direction, needed, optional = f"--to {peer}", ("--model-path",), ()
    missing = [flag for flag in needed if flag not in given]
    extra = [flag for flag in given if flag not in needed + optional]
    if missing or extra:
        received = [f"no {flag}" for flag in missing] + [f"{flag} too" for flag in extra]
        raise ZooError(
            f"Expected {direction} with {' and '.join(needed)}"
            f"{''.join(f' (and {flag} if any)' for flag in optional)}. "
            f"Received: {', '.join(received)}"
        )
    if args.peer_in and not args.output.endswith(".weights.h5"):
        raise ZooError(
            f"Expected an --output ending in .weights.h5 for --from {peer}. "
            f"Received: {args.output!r}"
        )
    if os.path.lexists(args.output) and not args.overwrite:
        raise ZooError(f"Expected a new --output file; {args.output!r} exists (pass --overwrite)")
    if args.peer_in:
        net = zoo.create_model(args.model, **args.model_kwargs)
        getattr(zoo.convert, f"from_{peer}")(net, args.input)
        zoo.save_weights(net, args.output)
    else:
        getattr(zoo.convert, f"to_{peer}")(zoo.load_model(args.model_path), args.output)
    print(f"Wrote {args.output}", file=sys.stderr)
    return 0


def _list(args):
    import zoo

    names = zoo.list_models(args.patterns or "*", exclude=args.exclude)
    print(markdown_table(names) if args.markdown else "\n".join(names))
    return 0


def _info(args):
    import zoo

    print(json.dumps(zoo.model_info(args.name).to_dict(), indent=2))
    return 0


def markdown_table(names) -> str:
    """The README's model table, built from the registry."""
    import zoo

    rows = [
        "| Model | Style | Task | Default input | Parameters | FLOPs | Source |",
        "|---|---|---|---|---:|---:|---|",
    ]
    for name in names:
        info = zoo.model_info(name)
        flops = "–" if info.flops is None else _si(info.flops)
        rows.append(
            f"| `{name}` | {info.style} | {info.task.replace('_', ' ')} | "
            f"{info.input_shape} | {info.parameters:,} | {flops} | {info.paper or info.source} |"
        )
    return "\n".join(rows)


def _si(count):
    """`8178368512` → `"8.18 G"`: three significant figures and an SI prefix."""
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if count >= scale:
            return f"{count / scale:.3g} {prefix}"
    return str(count)


def _split_options(args):
    return dict(
        seed=args.seed,
        image_size=args.image_size,
        allow_training_data=args.allow_training_data,
    )


def _add_split_flags(command):
    """The flags that say how to split a data set into the model's test split."""
    command.add_argument(
        "--seed",
        type=int,
        help="the split seed (default: the run's, from the config.json beside the model, else 0)",
    )
    command.add_argument(
        "--image-size",
        type=int,
        help="the side an image folder's images are resized to (default: the run's, else "
        "their own size)",
    )
    command.add_argument(
        "--allow-training-data",
        action="store_true",
        help="test on a split that may hold samples the model trained on: the run's data "
        "with another --seed, or its files changed since",
    )


def _fail(exc) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


class _Parser(argparse.ArgumentParser):
    """argparse, with a mistake on the command line one line on stderr (exit
    2), like every other mistake, instead of the usage block and the error."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def _parser(fit_defaults=None):
    common = _Parser(add_help=False)
    common.add_argument(
        "--backend",
        help=f"Keras backend: {', '.join(backends.BACKENDS)}; for fit also auto, the fastest "
        "installed one for the model (measured once per machine). Defaults to $KERAS_BACKEND.",
    )
    parser = _Parser(
        prog="python -m training",
        description="Train, evaluate and inspect zoo models on any Keras backend.",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    fit = commands.add_parser("fit", parents=[common], help="train a model and test it")
    fit.set_defaults(command=_fit)
    fit.add_argument(
        "--model",
        default="simple_cnn",
        help="zoo model name, or a .keras file to train further (default: %(default)s)",
    )
    fit.add_argument(
        "--dataset",
        default="digits",
        help="data set name, folder of class subfolders of images, or .npz file "
        "(default: %(default)s)",
    )
    _add_fit_config_flags(fit)
    fit.add_argument(
        "--config",
        metavar="FILE",
        help="a JSON or TOML file of these options (a run's config.json replays the run); "
        "flags given as well override it",
    )
    fit.set_defaults(**(fit_defaults or {}))

    evaluate = commands.add_parser(
        "evaluate", parents=[common], help="test a saved model; prints JSON"
    )
    evaluate.set_defaults(command=_evaluate)
    evaluate.add_argument("--model-path", required=True, help="a .keras file")
    evaluate.add_argument(
        "--dataset",
        help="data set name, image folder or .npz file (default: the run's, from the "
        "config.json beside the model, else digits)",
    )
    evaluate.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    _add_split_flags(evaluate)

    predict = commands.add_parser("predict", parents=[common], help="run a saved model on inputs")
    predict.set_defaults(command=_predict)
    predict.add_argument("--model-path", required=True, help="a .keras file")
    source = predict.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="a .npy array of inputs")
    source.add_argument(
        "--dataset", help="predict this data set's test split (name, image folder or .npz file)"
    )
    predict.add_argument(
        "--output", help="write predictions to this .npy file (default: print JSON)"
    )
    predict.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    predict.add_argument("--batch-size", type=int, default=32, help="(default: %(default)s)")
    _add_split_flags(predict)

    export = commands.add_parser(
        "export", parents=[common], help="write a saved model as ONNX, a SavedModel or a .pt2"
    )
    export.set_defaults(command=_export)
    export.add_argument("--model-path", required=True, help="a .keras file")
    export.add_argument("--format", required=True, choices=FORMATS)
    export.add_argument(
        "--output",
        required=True,
        help="the .onnx file, SavedModel directory or .pt2 file to write",
    )
    export.add_argument("--overwrite", action="store_true", help="replace an existing --output")

    convert = commands.add_parser(
        "convert",
        parents=[common],
        help="torchvision or timm weights into a zoo model's .weights.h5, or a saved model's "
        "weights out as theirs",
    )
    convert.set_defaults(command=_convert)
    peers = ("torchvision", "timm")
    direction = convert.add_mutually_exclusive_group(required=True)
    direction.add_argument(
        "--from", dest="peer_in", choices=peers, help="read --input, the peer's state_dict"
    )
    direction.add_argument(
        "--to", dest="peer_out", choices=peers, help="write --model-path's weights as the peer's"
    )
    convert.add_argument("--model", help="with --from: the zoo model name to build")
    convert.add_argument(
        "--model-arg",
        dest="model_kwargs",
        action=_CollectPairs,
        type=model_argument,
        default={},
        metavar="KEY=VALUE",
        help="with --from: a builder argument, as fit's (repeatable; num_classes=10, "
        "include_top=false)",
    )
    convert.add_argument(
        "--input", help="with --from: a torch.save (.pth) or .safetensors state_dict"
    )
    convert.add_argument("--model-path", help="with --to: a .keras file")
    convert.add_argument(
        "--output",
        required=True,
        help="with --from, a .weights.h5 file; with --to, a .safetensors file, or a .pth "
        "(.pt, .bin) in torch.save's format",
    )
    convert.add_argument("--overwrite", action="store_true", help="replace an existing --output")

    bench_ = commands.add_parser(
        "bench", help="time training and inference against native loops; prints a table"
    )
    bench_.set_defaults(command=_bench)
    bench_.add_argument(
        "--models",
        nargs="+",
        metavar="MODEL",
        help=f"from {', '.join(bench.MODELS)} (default: all)",
    )
    bench_.add_argument(
        "--backends", nargs="+", metavar="BACKEND", help="(default: every installed backend)"
    )
    bench_.add_argument(
        "--modes",
        nargs="+",
        metavar="MODE",
        default=list(bench.MODES),
        help=f"from {', '.join(bench.MODES)} (default: all)",
    )
    bench_.add_argument(
        "--precision",
        nargs="+",
        metavar="PRECISION",
        default=["float32"],
        help=f"from {', '.join(bench.PRECISIONS)}, on both sides (default: float32)",
    )
    bench_.add_argument(
        "--batch-size",
        type=int,
        default=bench.DEFAULT_BATCH_SIZE,
        help="(default: %(default)s)",
    )
    bench_.add_argument(
        "--steps",
        type=int,
        help="steps per timed epoch (default: per model, a second's work or more)",
    )
    bench_.add_argument(
        "--repeats",
        type=int,
        default=bench.DEFAULT_REPEATS,
        help="timed epochs; a rate is their median (default: %(default)s)",
    )
    bench_.add_argument("--json", metavar="FILE", help="also write the records as JSON")

    list_ = commands.add_parser("list", parents=[common], help="list model names")
    list_.set_defaults(command=_list)
    list_.add_argument(
        "patterns", nargs="*", help="fnmatch patterns, e.g. 'resnet*' (default: all)"
    )
    list_.add_argument(
        "--exclude", action="append", default=[], help="drop names matching this pattern"
    )
    list_.add_argument("--markdown", action="store_true", help="print the README model table")

    info = commands.add_parser("info", parents=[common], help="print a model's metadata as JSON")
    info.set_defaults(command=_info)
    info.add_argument("name", help="zoo model name")
    return parser


def _add_fit_config_flags(fit):
    """A flag for each field of `FitConfig`, made from its `option(...)`:
    `--epochs` for `epochs`, with the field's default, help and choices."""
    for field in dataclasses.fields(FitConfig):
        option = field.metadata
        value = default(field)
        flag = option["flag"] or "--" + field.name.replace("_", "-")
        spec = dict(dest=field.name, default=value, help=_help(field, value))
        if field.type is bool:
            spec.update(action="store_true")
        elif field.type is dict:  # a repeatable KEY=VALUE flag
            spec.update(action=_CollectPairs, type=option["parse"])
        else:
            spec.update(type=option["parse"] or _scalar(field))
        spec.update(choices=option["choices"], metavar=option["metavar"])
        fit.add_argument(flag, **{key: v for key, v in spec.items() if v is not None})


def _help(field, value):
    # argparse formats help with %; the docstring's backticks mean nothing here.
    text = field.metadata["help"].replace("%", "%%").replace("`", "")
    if field.type is bool or field.type is dict:
        return text  # off, and empty: no default to show
    meaning = _DEFAULT_TEXT.get(field.name) or field.metadata["default_text"]
    return f"{text} (default: {(meaning or str(value)).replace('`', '')})"


def _scalar(field):
    """`int` for a field typed `int` or `int | None`; likewise `float` and `str`."""
    types = [t for t in typing.get_args(field.type) or (field.type,) if t is not type(None)]
    if len(types) != 1 or types[0] not in (int, float, str):
        raise TypeError(
            f"FitConfig.{field.name} is a {field.type}: give its option() a parse= for the "
            "command line"
        )
    return types[0]


class _CollectPairs(argparse.Action):
    """Collects a repeatable flag's `(key, value)` pairs into a new dict."""

    def __call__(self, parser, namespace, values, option_string=None):
        key, value = values
        setattr(namespace, self.dest, {**getattr(namespace, self.dest), key: value})
