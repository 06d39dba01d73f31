"""torchvision's MobileNetV2 in plain torch.nn, with its module names, so that
its state_dict is a torchvision state_dict (torchvision's wheel does not import
against the CPU-only torch used here). As torchvision 0.29's
`torchvision/models/mobilenetv2.py`: `Conv2dNormActivation` is a Sequential of
a bias-free convolution padded by `(kernel - 1) // 2`, BatchNorm and ReLU6."""

import torch
from torch import nn

SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1))
SETTING += ((6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value, divisor=8):
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def conv_norm_activation(inputs, outputs, kernel_size=3, stride=1, groups=1):
    return nn.Sequential(
        nn.Conv2d(
            inputs, outputs, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(outputs),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, inputs, outputs, stride, expand_ratio):
        super().__init__()
        hidden = int(round(inputs * expand_ratio))
        self.use_res_connect = stride == 1 and inputs == outputs
        layers = [conv_norm_activation(inputs, hidden, 1)] if expand_ratio != 1 else []
        layers += [
            conv_norm_activation(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, outputs, 1, 1, 0, bias=False),
            nn.BatchNorm2d(outputs),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=1000, width_mult=1.0, dropout=0.2):
        super().__init__()
        channels = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        features = [conv_norm_activation(3, channels, stride=2)]
        for t, c, n, s in SETTING:
            outputs = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(channels, outputs, s if i == 0 else 1, t))
                channels = outputs
        features.append(conv_norm_activation(channels, last, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def randomised(num_classes, width_mult=1.0, seed=0):
    """A reference MobileNetV2 with random weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = MobileNetV2(num_classes=num_classes, width_mult=width_mult)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.num_batches_tracked.fill_(7)
    return model.eval()
