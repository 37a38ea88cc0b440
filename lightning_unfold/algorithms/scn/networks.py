"""The super-resolution black box: a residual convolutional network (SRCNN-like)."""

from __future__ import annotations

from torch import Tensor, nn


class SRBlackBoxNet(nn.Module):
    r"""The black-box baseline: :math:`\hat X = x + f(x)` with :math:`f` three convolutions
    (``patch`` × ``patch``, 3 × 3, ``patch`` × ``patch``; ReLU between), the residual form of
    SRCNN (Dong et al. 2014) with the unfolded model's receptive field. The width is the largest
    whose parameter count stays within ``target_params`` (at least 2)."""

    def __init__(self, target_params: int, *, patch: int = 5, scale: int = 2) -> None:
        super().__init__()
        if patch < 3 or patch % 2 == 0:
            patch += 1  # odd kernels keep the image size with symmetric padding
        k = patch

        def count(w: int) -> int:
            return (k * k + 1) * w + (9 * w + 1) * w + (k * k * w + 1)

        width = 2
        while count(width + 1) <= target_params:
            width += 1
        self.width, self.scale = width, scale
        self.net = nn.Sequential(
            nn.Conv2d(1, width, k, padding=k // 2, padding_mode="replicate"),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, padding_mode="replicate"),
            nn.ReLU(),
            nn.Conv2d(width, 1, k, padding=k // 2, padding_mode="replicate"),
        )
        last = self.net[-1]
        assert isinstance(last, nn.Conv2d)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)
