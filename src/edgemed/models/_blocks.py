"""Building blocks shared by the student zoo (torch).

Activations are never in-place and skips are plain `torch.cat`, so torch-pruning's dependency
graph can trace every student (in-place ops and fancy skips break it).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvBnAct", "DoubleConv", "InvertedResidual", "ResBlock", "UpBlock"]


class ConvBnAct(nn.Sequential):
    """Conv2d → BatchNorm2d → ReLU."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1,
                 act: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if act:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class DoubleConv(nn.Sequential):
    """Two 3x3 ConvBnAct, the classic U-Net stage."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(ConvBnAct(in_ch, out_ch), ConvBnAct(out_ch, out_ch))


class ResBlock(nn.Module):
    """Pre-activation-free residual block: two 3x3 convs plus a 1x1 projection when widths differ."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBnAct(in_ch, out_ch, stride=stride)
        self.conv2 = ConvBnAct(out_ch, out_ch, act=False)
        self.skip = (
            ConvBnAct(in_ch, out_ch, kernel=1, stride=stride, act=False)
            if stride != 1 or in_ch != out_ch else nn.Identity()
        )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.skip(x))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand → 3x3 depthwise → 1x1 project, residual when shapes allow."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, expand: int = 4) -> None:
        super().__init__()
        hidden = in_ch * expand
        self.block = nn.Sequential(
            ConvBnAct(in_ch, hidden, kernel=1),
            ConvBnAct(hidden, hidden, stride=stride, groups=hidden),
            ConvBnAct(hidden, out_ch, kernel=1, act=False),
        )
        self.use_residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return out + x if self.use_residual else out


class UpBlock(nn.Module):
    """2x transposed-conv upsampling, concatenation with the skip, then a fusing block.

    ConvTranspose (not Resize) so the decoder quantizes to INT8 cleanly on TensorRT
    (PAIN_POINTS #6: Resize layers stay FP and add reformat overhead).
    """

    def __init__(self, in_ch: int, skip_ch: int, out_ch: int, fuse: nn.Module | None = None) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, out_ch, kernel_size=2, stride=2)
        self.fuse = fuse if fuse is not None else DoubleConv(out_ch + skip_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.up(x), skip], dim=1))
