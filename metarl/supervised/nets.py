"""The two networks of the MAML paper as pure functions of a parameter dict.

``init_*`` returns ``dict[str, Tensor]``; ``*_forward(params, x)`` uses only
functional ops, so a forward pass at adapted parameters is just a call with another
dict, and the same code runs under ``torch.func.grad`` and ``vmap``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from metarl.adaptation import Params


def _linear_init(fan_in: int, fan_out: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    # PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    bound = 1.0 / math.sqrt(fan_in)
    weight = (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1) * bound
    bias = (torch.rand(fan_out, generator=generator) * 2 - 1) * bound
    return weight, bias


def init_mlp(sizes: Sequence[int], generator: torch.Generator) -> Params:
    """MLP parameters for layer sizes ``[in, hidden..., out]`` (``fc{i}.weight [out, in]``, ``fc{i}.bias``)."""
    params: Params = {}
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"fc{i}.weight"], params[f"fc{i}.bias"] = _linear_init(fan_in, fan_out, generator)
    return params


def mlp_forward(params: Params, x: Tensor) -> Tensor:
    """``x [B, in] -> [B, out]``, ReLU between layers, linear output."""
    n = sum(1 for k in params if k.endswith(".weight"))
    for i in range(n):
        x = F.linear(x, params[f"fc{i}.weight"], params[f"fc{i}.bias"])
        if i < n - 1:
            x = F.relu(x)
    return x


def conv_feature_size(image_size: int, blocks: int) -> int:
    """Spatial side after ``blocks`` 3x3 convolutions with stride 2 and padding 1."""
    for _ in range(blocks):
        image_size = (image_size - 1) // 2 + 1
    return image_size


def init_convnet(
    channels: int, image_size: int, num_classes: int, generator: torch.Generator, filters: int = 64, blocks: int = 4
) -> Params:
    """The paper's classifier: ``blocks`` x (3x3 conv, ``filters``, batch norm, ReLU, stride 2), then linear.

    Keys: ``conv{i}.weight [F, C, 3, 3]``, ``conv{i}.bias [F]``, ``bn{i}.weight/bias [F]``,
    ``out.weight [num_classes, F * s * s]``, ``out.bias [num_classes]``.
    """
    params: Params = {}
    in_ch = channels
    for i in range(blocks):
        fan_in = in_ch * 9
        # He-uniform for ReLU nets (what nn.init.kaiming_uniform_ with a=0 draws).
        bound = math.sqrt(6.0 / fan_in)
        params[f"conv{i}.weight"] = (torch.rand(filters, in_ch, 3, 3, generator=generator) * 2 - 1) * bound
        params[f"conv{i}.bias"] = torch.zeros(filters)
        params[f"bn{i}.weight"] = torch.ones(filters)
        params[f"bn{i}.bias"] = torch.zeros(filters)
        in_ch = filters
    side = conv_feature_size(image_size, blocks)
    params["out.weight"], params["out.bias"] = _linear_init(filters * side * side, num_classes, generator)
    return params


def convnet_forward(params: Params, x: Tensor) -> Tensor:
    """``x [B, C, H, W]`` in [0, 1] -> logits ``[B, num_classes]``.

    Batch norm always normalises with the statistics of the batch it is given (no
    running averages), as the paper's code did at training and test time alike: the
    support set during adaptation, the query set when it is scored.
    """
    blocks = sum(1 for k in params if k.startswith("conv") and k.endswith(".weight"))
    for i in range(blocks):
        x = F.conv2d(x, params[f"conv{i}.weight"], params[f"conv{i}.bias"], stride=2, padding=1)
        x = F.batch_norm(x, None, None, params[f"bn{i}.weight"], params[f"bn{i}.bias"], training=True)
        x = F.relu(x)
    return F.linear(x.flatten(1), params["out.weight"], params["out.bias"])
