"""The CRF family's networks: convolutional correction / inductive-bias heads and the
black-box segmentation network.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class _ConvHead(nn.Module):
    """Two 3×3 convolutions of the maps ``[Q, I]`` (flat features in, flat logits out)."""

    def __init__(self, c_in: int, c_out: int, size: int, hidden: int, *, zero: bool) -> None:
        super().__init__()
        self.c_in, self.size = c_in, size
        last = nn.Conv2d(hidden, c_out, 3, padding=1)
        if zero:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        self.conv = nn.Sequential(nn.Conv2d(c_in, hidden, 3, padding=1), nn.ReLU(), last)

    def forward(self, features: Tensor) -> Tensor:
        maps = features.reshape(features.shape[0], self.c_in, self.size, self.size)
        return self.conv(maps).flatten(1)


class _ConvIteration(nn.Module):
    r"""Inductive-bias layer: :math:`Q^{(k)} = \operatorname{softmax}(\log Q^{(k-1)} +
    \mathrm{conv}([Q^{(k-1)}, I]))` — a learned update that keeps the iterate a probability map."""

    def __init__(self, labels: int, channels: int, size: int, hidden: int) -> None:
        super().__init__()
        self.labels, self.size = labels, size
        self.head = _ConvHead(labels + channels, labels, size, hidden, zero=False)

    def forward(self, features: Tensor, flat_iterate: Tensor) -> Tensor:
        B = features.shape[0]
        q = flat_iterate.reshape(B, self.labels, self.size, self.size)
        logits = q.clamp_min(1e-12).log() + self.head(features).reshape(q.shape)
        return torch.softmax(logits, dim=1).flatten(1)


class SegmentationBlackBoxNet(nn.Module):
    r"""The black box: ``layers`` 3×3 convolutions with dilations 1, 2, 4, ... (receptive field
    :math:`2^{\text{layers}} + 1` pixels), ReLU between, softmax over labels; the width is the
    largest whose parameter count stays within ``target_params`` (at least 2)."""

    def __init__(self, channels: int, labels: int, target_params: int, *, layers: int = 4) -> None:
        super().__init__()
        if layers < 2:
            raise ValueError(f"{type(self).__name__} needs layers >= 2, got {layers}.")

        def count(w: int) -> int:
            return (9 * channels + 1) * w + (layers - 2) * (9 * w + 1) * w + (9 * w + 1) * labels

        width = 2
        while count(width + 1) <= target_params:
            width += 1
        mods: list[nn.Module] = []
        c_in = channels
        for i in range(layers):
            c_out = labels if i == layers - 1 else width
            d = 2**i if i < layers - 1 else 1
            mods.append(nn.Conv2d(c_in, c_out, 3, padding=d, dilation=d))
            if i < layers - 1:
                mods.append(nn.ReLU())
            c_in = c_out
        self.net, self.width = nn.Sequential(*mods), width

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.net(x), dim=1)
