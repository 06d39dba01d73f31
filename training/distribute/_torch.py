"""PyTorch: `torch.distributed`, one process per device, started by torchrun.

Keras' guide to multi-GPU training with PyTorch wraps the model in
`DistributedDataParallel` and writes its own loop. `model.fit` cannot go
through that wrapper (Keras calls the model itself), and custom steps take
gradients with `torch.autograd.grad`, which DDP does not support. So the
processes do what DDP does, with `torch.distributed`'s collectives: they start
from rank 0's weights, and average the gradients with `all_reduce` right
before `optimizer.apply`, where Keras' trainer and custom steps meet.
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


class SyncReplicas(keras.callbacks.Callback):
    """Keeps the processes' models equal, as DDP does.

    At the start, every process takes rank 0's weights; each
    `optimizer.apply(grads, ...)` first averages `grads` over the processes;
    epoch logs are averaged, so they describe the global batches; at the end,
    the non-trainable weights (BatchNorm statistics, which each process
    gathered from its own slices) are rank 0's, as DDP's buffers are.
    """

    def on_train_begin(self, logs=None):
        _broadcast(self.model.weights)
        optimizer = self.model.optimizer
        self._optimizers = (
            list(optimizer.members.values())
            if isinstance(optimizer, OptimizerGroup)
            else [optimizer]
        )
        for member in self._optimizers:
            # An instance attribute shadows the method until on_train_end.
            member.apply = functools.partial(_apply_mean, member.apply)

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
        for member in self._optimizers:
            del member.apply
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
