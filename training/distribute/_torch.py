"""PyTorch: `torch.distributed`, one process per device, started by torchrun.

Written for Keras 3.15 (`zoo.patches.KERAS_VERSIONS`, `>=3.15.1,<3.16`), whose
torch trainer knows nothing of `torch.distributed`. Keras' guide to multi-GPU
training with PyTorch wraps the model in `DistributedDataParallel` and writes
its own loop. `model.fit` cannot go through that wrapper (Keras 3.15 calls the
model itself), and custom steps take gradients with `torch.autograd.grad`,
which DDP does not support. So the processes do what DDP does, with
`torch.distributed`'s collectives: they start from rank 0's weights, and
average the gradients with `all_reduce` right before `optimizer.apply`, where
Keras' trainer and custom steps meet (`OPTIMIZER_APPLY`, in place on each
optimizer for the length of `fit`).

Keras' main branch (3.16) wraps the model in `DistributedDataParallel` itself:
its torch trainer's `make_train_function` calls `_initialize_ddp` whenever
`torch.distributed` is initialized, `train_step` runs the wrapped model, so DDP
averages the gradients during `backward()`, and `get_metrics_result`
all-reduces the metrics. Averaging again at `optimizer.apply` would be a
second all-reduce of every gradient each step. So outside 3.15,
`OPTIMIZER_APPLY` is off (a warning says so) and Keras' own DDP averages the
gradients of its trainer's steps; a written-once step, which DDP does not see,
then trains each process on its own slices. The broadcast of rank 0's weights
and the averaging of epoch logs stay: there they repeat what DDP and Keras'
metrics have done.
"""

import atexit
import contextlib
import functools
import os

import keras
import torch
import torch.distributed as dist

from training.distribute import Replicas
from zoo import ZooError
from zoo.patches import KerasPatch
from zoo.steps import OptimizerGroup

# torchrun sets these for every process it starts.
_TORCHRUN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")


@contextlib.contextmanager
def replicas(devices):
    if not all(name in os.environ for name in _TORCHRUN_ENV):
        if devices and devices > 1:
            raise ZooError(
                "On the torch backend, distribute='data' runs one process per device: "
                f"start them with torchrun --nproc-per-node={devices} (python -m training "
                f"fit --distribute data --devices {devices} does). Received: devices="
                f"{devices} in a process that torchrun did not start"
            )
        yield Replicas(count=1)
        return
    local = int(os.environ["LOCAL_WORLD_SIZE"])
    if devices and devices != local:
        raise ZooError(
            f"Expected devices to match torchrun's --nproc-per-node={local}. "
            f"Received: devices={devices}"
        )
    if not dist.is_initialized():
        _start_process_group()
    rank, world = dist.get_rank(), dist.get_world_size()
    yield Replicas(
        count=world,
        process_index=rank,
        processes=world,
        data_shard=(rank, world),
        callbacks=(SyncReplicas(),) if world > 1 else (),
    )


def _start_process_group():
    """Joins torchrun's process group, for the rest of the process: a group
    destroyed and started again under one torchrun can hang."""
    if torch.cuda.is_available():
        # Keras puts tensors on "cuda", the current device.
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    atexit.register(dist.destroy_process_group)


OPTIMIZER_APPLY = KerasPatch(
    "training's averaging of gradients over torch processes at optimizer.apply",
    written_for={
        # The method replaced, on each optimizer of the model, for one fit.
        "keras.src.optimizers.base_optimizer.BaseOptimizer.apply": "43097be63b919d03",
        # Keras 3.15's trainer calls it once a step with every gradient; 3.16
        # wraps the model in DistributedDataParallel here.
        "keras.src.backend.torch.trainer.TorchTrainer.train_step": "a638d4455d8fced6",
        "keras.src.backend.torch.trainer.TorchTrainer.make_train_function": "280aed779362a2df",
    },
)


class SyncReplicas(keras.callbacks.Callback):
    """Keeps the processes' models equal, as DDP does.

    At the start, every process takes rank 0's weights; until the end, each
    `optimizer.apply(grads, ...)` first averages `grads` over the processes
    (`OPTIMIZER_APPLY`); epoch logs are averaged, so they describe the global
    batches; at the end, the non-trainable weights (BatchNorm statistics,
    which each process gathered from its own slices) are rank 0's, as DDP's
    buffers are.
    """

    def on_train_begin(self, logs=None):
        _broadcast(self.model.weights)
        optimizer = self.model.optimizer
        members = (
            list(optimizer.members.values())
            if isinstance(optimizer, OptimizerGroup)
            else [optimizer]
        )
        # An instance attribute shadows each optimizer's method until on_train_end.
        self._averaging = contextlib.ExitStack()
        self._averaging.enter_context(
            OPTIMIZER_APPLY.installed(
                *[
                    (member, "apply", functools.partial(_apply_mean, member.apply))
                    for member in members
                ]
            )
        )

    def on_epoch_end(self, epoch, logs=None):
        # Keras hands every callback the same dict, History last: averaged in
        # place, the history and progress bar show the global values.
        names = sorted(name for name, value in (logs or {}).items() if _is_number(value))
        if names:
            values = _to_device(torch.tensor([float(logs[name]) for name in names]))
            dist.all_reduce(values)
            for name, value in zip(names, (values / dist.get_world_size()).tolist(), strict=True):
                logs[name] = value

    def on_train_end(self, logs=None):
        self._averaging.close()
        _broadcast(self.model.non_trainable_weights)


def _apply_mean(apply, grads, trainable_variables=None):
    present = [grad for grad in grads if grad is not None]
    if present:
        with torch.no_grad():
            flat = torch.cat([grad.reshape(-1) for grad in present])
            dist.all_reduce(flat)
            flat /= dist.get_world_size()
            offset = 0
            for grad in present:
                grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
                offset += grad.numel()
    return apply(grads, trainable_variables)


def _broadcast(variables):
    with torch.no_grad():
        for variable in variables:
            dist.broadcast(variable.value.data, src=0)


def _to_device(tensor):
    return tensor.cuda() if dist.get_backend() == "nccl" else tensor


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)
