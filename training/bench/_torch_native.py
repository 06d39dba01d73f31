"""The benchmark models as `torch.nn.Module`s, trained by a plain PyTorch loop.

Written as a PyTorch user would: NCHW images, `nn.Conv2d`/`nn.Linear` with fused
biases, `torch.optim.SGD`, (variant `"compile"`) `torch.compile` on the
module, and for `mixed_bfloat16` the forward pass under `torch.autocast`.
"""

import contextlib

import numpy as np
import torch
from torch import nn

VARIANTS = ("eager", "compile")


def _mlp(input_shape, num_classes, hidden_units=(128,)):
    layers, width = [nn.Flatten()], int(np.prod(input_shape))
    for units in hidden_units:
        layers += [nn.Linear(width, units), nn.ReLU()]
        width = units
    return nn.Sequential(*layers, nn.Linear(width, num_classes))


def _simple_cnn(input_shape, num_classes):
    height, width, channels = input_shape
    flat = 32 * ((height - 2) // 2) * ((width - 2) // 2)
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(flat, 64),
        nn.ReLU(),
        nn.Linear(64, num_classes),
    )


class _BasicBlock(nn.Module):
    def __init__(self, in_channels, filters, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, filters, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters)
        self.conv2 = nn.Conv2d(filters, filters, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(filters)
        self.downsample = None
        if stride != 1 or in_channels != filters:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, filters, 1, stride, bias=False), nn.BatchNorm2d(filters)
            )

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class _ResNet18Small(nn.Module):
    """ResNet-18 with the 3x3 stride-1 stem and no max pool, for 32x32 images."""

    def __init__(self, channels, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        blocks, width = [], 64
        for stage in range(4):
            filters = 64 * 2**stage
            for index in range(2):
                blocks.append(_BasicBlock(width, filters, 2 if stage and not index else 1))
                width = filters
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.blocks(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _resnet18(input_shape, num_classes, stem):
    if stem != "small":
        raise ValueError(f"Expected stem='small' for the native ResNet-18. Received: stem={stem!r}")
    return _ResNet18Small(input_shape[-1], num_classes)


BUILDERS = {"mlp": _mlp, "simple_cnn": _simple_cnn, "resnet18": _resnet18}


class Native:
    """One model, its data as tensors and an SGD optimizer.

    Args:
        model: a name from `BUILDERS`.
        model_kwargs: its arguments, `input_shape` (HWC) included.
        x: float32 images `(N, H, W, C)`; converted to NCHW once, here.
        y: int labels `(N,)`.
        loop: a `training.bench.NativeLoop`; its variant is one of
            `VARIANTS`, and `mixed_bfloat16` runs the forward pass under
            `torch.autocast`.
    """

    def __init__(self, model, model_kwargs, x, y, loop):
        torch.manual_seed(loop.seed)
        self.module = BUILDERS[model](**model_kwargs)
        self.forward = torch.compile(self.module) if loop.variant == "compile" else self.module
        self.optimizer = torch.optim.SGD(self.module.parameters(), lr=loop.learning_rate)
        self.loss = nn.CrossEntropyLoss()
        images = x.transpose(0, 3, 1, 2) if x.ndim == 4 else x
        self.x = torch.from_numpy(np.ascontiguousarray(images))
        self.y = torch.from_numpy(y.astype("int64"))
        self.batch_size = loop.batch_size
        self.generator = torch.Generator().manual_seed(loop.seed)
        self.mixed = loop.precision == "mixed_bfloat16"

    def _autocast(self):
        if not self.mixed:
            return contextlib.nullcontext()
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def weight_sizes(self):
        """Sizes of the trainable tensors and of the other state (BatchNorm
        statistics), each sorted."""
        state = [b for name, b in self.module.named_buffers() if "num_batches" not in name]
        return sorted(p.numel() for p in self.module.parameters()), sorted(b.numel() for b in state)

    def train_epoch(self):
        self.module.train()
        order = torch.randperm(len(self.x), generator=self.generator)
        x, y = self.x[order], self.y[order]
        for start in range(0, len(x), self.batch_size):
            end = start + self.batch_size
            self.optimizer.zero_grad()
            with self._autocast():
                loss = self.loss(self.forward(x[start:end]), y[start:end])
            loss.backward()
            self.optimizer.step()

    def predict_epoch(self):
        self.module.eval()
        with torch.no_grad(), self._autocast():
            outputs = [
                self.forward(self.x[start : start + self.batch_size])
                for start in range(0, len(self.x), self.batch_size)
            ]
        return torch.cat(outputs).float().numpy()

    def predict_calls(self, calls):
        """Predicts the first `calls` samples one call each, as a server
        answers single requests."""
        self.module.eval()
        for i in range(calls):
            with torch.no_grad(), self._autocast():
                self.forward(self.x[i : i + 1]).float().numpy()
