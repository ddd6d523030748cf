"""Pruning common teacher architectures: MONAI UNet (concatenated skips) and nnU-Net's PlainConvUNet."""

from __future__ import annotations

import pytest
import torch


def _prune_half(net: torch.nn.Module, example: torch.Tensor) -> tuple[int, int]:
    import torch_pruning as tp

    from edgemed.compress import concat_sizes_from_tensors

    before = sum(p.numel() for p in net.parameters())
    head = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))][-1]
    with concat_sizes_from_tensors():
        pruner = tp.pruner.MetaPruner(net, example, importance=tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=0.5, ignored_layers=[head])
        pruner.step()
    return before, sum(p.numel() for p in net.parameters())


def test_monai_unet_with_concatenated_skips_prunes_and_runs() -> None:
    # torch-pruning 1.6 alone crashes here (update_concat_index_mapping: int + NoneType).
    nets = pytest.importorskip("monai.networks.nets")
    net = nets.UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                    num_res_units=2).eval()
    x = torch.randn(1, 1, 64, 64)
    before, after = _prune_half(net, x)
    assert after < 0.35 * before
    assert net(x).shape == (1, 2, 64, 64)


def test_nnunet_plain_conv_unet_prunes_and_runs() -> None:
    arch = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    net = arch.PlainConvUNet(1, 4, (16, 32, 64, 128), torch.nn.Conv2d, 3, (1, 2, 2, 2), (2, 2, 2, 2), 2, (2, 2, 2),
                             False, torch.nn.BatchNorm2d, None, None, None, torch.nn.LeakyReLU,
                             {"inplace": True}).eval()
    x = torch.randn(1, 1, 64, 64)
    before, after = _prune_half(net, x)
    assert after < 0.35 * before
    assert net(x).shape == (1, 2, 64, 64)
