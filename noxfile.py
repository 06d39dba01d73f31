"""The test matrix: one session per Keras backend, each in its own virtualenv with
only that backend installed, plus accelerator variants, a cross-backend session
and lint.

    nox                      # every test session; GPU sessions skip where there is no GPU
    nox -s test-torch        # one backend
    nox -s test-jax -- -k registry   # arguments after -- go to pytest
    nox -s bench             # zoo against native loops: a table and bench.json

The budget: all of `nox`, installs included, in at most 30 minutes on a 2-core
machine like CI's, and each `test-<backend>` session in at most 8 minutes
after its install. Every session prints its time and its 25 slowest tests;
when a run nears the budget, start trimming there (`-- --durations=0` lists
them all). The per-backend sessions run on every core with pytest-xdist
(`tests/conftest.py` gives each worker's frameworks its share of the cores),
a module's tests on one worker so that its module-scoped runs train once;
`-- -n 0` runs them in one process. A second run reuses the virtualenvs and
installs only the project, unless pyproject.toml or the constraints changed.
"""

import hashlib
import pathlib
import shutil
import subprocess

import nox

BACKENDS = ("tensorflow", "torch", "jax")
# Pins the CPU wheels: an unpinned torch resolves to the multi-GB CUDA build.
CPU_CONSTRAINTS = ("-c", "constraints-cpu.txt")

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
# A session's virtualenv is kept for the next run, and its dependencies are
# installed again only when these files change.
nox.options.reuse_venv = "yes"
DEPENDENCY_FILES = ("pyproject.toml", "constraints-cpu.txt")


def _install(session, *args):
    """Installs `args`, or only the project itself where this virtualenv,
    reused from an earlier run, already holds the same dependencies."""
    stamp = pathlib.Path(session.virtualenv.location, ".installed")
    wanted = hashlib.sha256(
        repr(args).encode() + b"".join(pathlib.Path(f).read_bytes() for f in DEPENDENCY_FILES)
    ).hexdigest()
    # Byte-compiling every file of TensorFlow, torch and JAX took about half
    # of each install; Python compiles what a test imports when it imports it.
    if stamp.exists() and stamp.read_text() == wanted:
        session.install("--no-compile", "--no-deps", "--force-reinstall", ".")
        return
    session.install("--no-compile", *args)
    stamp.write_text(wanted)


def _pytest(session, *args):
    session.run("pytest", "--durations=25", *args, *session.posargs)


def _test(backend):
    def session(session):
        _install(session, *CPU_CONSTRAINTS, f".[{backend},export-{backend},test]")
        session.env["KERAS_BACKEND"] = backend
        _pytest(session, "-n", "auto", "--dist", "loadscope", "-m", "not cross_backend")

    session.__doc__ = f"Run the tests on the {backend} backend (CPU)."
    return session


def _test_gpu(backend):
    def session(session):
        gpu = _nvidia_gpu()
        if not gpu:
            session.skip("no NVIDIA GPU found (nvidia-smi missing or failing)")
        session.log(f"Found {gpu}")
        # No CPU constraints: on a GPU machine the default wheels are the CUDA ones.
        # One process: xdist workers would compete for the one GPU's memory.
        _install(session, f".[{backend}-gpu,export-{backend},test]")
        session.env.update(KERAS_BACKEND=backend, ZOO_EXPECT_GPU="1")
        _pytest(session, "-m", "not cross_backend")

    session.__doc__ = f"Run the tests on the {backend} backend on an NVIDIA GPU."
    return session


def _nvidia_gpu():
    if not shutil.which("nvidia-smi"):
        return None
    result = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        check=False,
    )
    return (
        result.stdout.strip().splitlines()[0]
        if result.returncode == 0 and result.stdout.strip()
        else None
    )


# nox names parametrised sessions `test(torch)`; the matrix is addressed as
# `test-torch`, so each backend's session is registered under that name.
for _backend in BACKENDS:
    nox.session(name=f"test-{_backend}")(_test(_backend))
    nox.session(name=f"test-{_backend}-gpu")(_test_gpu(_backend))


@nox.session(name="test-cross-backend")
def test_cross_backend(session):
    """Save under each backend, load under each other one, in subprocesses."""
    _install(session, *CPU_CONSTRAINTS, ".[all,test]")
    _pytest(session, "-n", "auto", "--dist", "loadscope", "-m", "cross_backend")


@nox.session
def lint(session):
    """ruff."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


# Not in the default run: a benchmark takes minutes and is not a test.
@nox.session(default=False)
def bench(session):
    """Time the zoo against native loops on every backend (CPU); writes bench.json.

    Prints the table; arguments after -- go to `python -m training bench`.
    """
    _install(session, *CPU_CONSTRAINTS, ".[all]")
    session.run("python", "-m", "training", "bench", "--json", "bench.json", *session.posargs)
