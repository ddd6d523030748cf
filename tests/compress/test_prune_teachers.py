"""Pruning every zoo student and common teacher architectures: MONAI UNet (concatenated skips),
BasicUNet (in-place activations after InstanceNorm), SwinUNETR (window attention), nnU-Net's PlainConvUNet.

torch-pruning 1.6.1 alone fails on the three MONAI networks; each test says how.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from edgemed.compress import PruneConfig, prune_module_
from edgemed.errors import ConfigError


def _prune_half(net: torch.nn.Module, x: torch.Tensor) -> tuple[int, int]:
    result = prune_module_(net.eval(), x, PruneConfig(ratio=0.5))
    assert result.parameters[1] == sum(p.numel() for p in net.parameters())
    assert result.macs[1] < 0.5 * result.macs[0]
    return result.parameters


@pytest.mark.parametrize("arch", ["unet2d", "mobile_unet2d", "res_unet2d"])
def test_every_zoo_student_prunes_and_runs(arch: str) -> None:
    from edgemed.models import StudentSpec, create_student

    net = create_student(StudentSpec(arch=arch, in_channels=3, num_classes=3))
    x = torch.randn(1, 3, 64, 64)
    before, after = _prune_half(net, x)
    assert after < 0.45 * before
    assert net(x).shape == (1, 3, 64, 64)


@pytest.mark.parametrize(("arch", "feeders"), [("unet2d", 1), ("res_unet2d", 2)])
def test_layers_feeding_the_head_keep_their_channels_unless_asked(arch: str, feeders: int) -> None:
    from edgemed.compress._prune import head_inputs, output_head
    from edgemed.models import StudentSpec, create_student

    x = torch.randn(1, 3, 64, 64)
    kept = create_student(StudentSpec(arch=arch, in_channels=3, num_classes=3))
    head = output_head(kept)
    import torch_pruning as tp

    found = head_inputs(tp, kept.eval(), x, head)
    assert len(found) == feeders  # res_unet2d: the residual sum has two producers
    widths = [m.out_channels for m in found]
    prune_module_(kept, x, PruneConfig(ratio=0.5))
    assert head.in_channels == 16 and [m.out_channels for m in found] == widths
    cut = create_student(StudentSpec(arch=arch, in_channels=3, num_classes=3))
    prune_module_(cut, x, PruneConfig(ratio=0.5, keep_head_inputs=False))
    assert output_head(cut).in_channels == 8
    assert kept(x).shape == cut(x).shape == (1, 3, 64, 64)


def test_monai_unet_with_concatenated_skips_prunes_and_runs() -> None:
    # torch-pruning 1.6 alone crashes here (update_concat_index_mapping: int + NoneType).
    nets = pytest.importorskip("monai.networks.nets")
    net = nets.UNet(spatial_dims=2, in_channels=1, out_channels=2, channels=(16, 32, 64, 128), strides=(2, 2, 2),
                    num_res_units=2)
    x = torch.randn(1, 1, 64, 64)
    before, after = _prune_half(net, x)
    assert after < 0.35 * before
    assert net(x).shape == (1, 2, 64, 64)


def test_monai_basic_unet_with_inplace_activations_prunes_and_runs() -> None:
    # Alone, torch-pruning loses each InstanceNorm followed by an in-place LeakyReLU from its graph:
    # the conv shrinks, the norm does not ("expected input's size at dim=1 to match num_features").
    nets = pytest.importorskip("monai.networks.nets")
    net = nets.BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(16, 16, 32, 64, 128, 16))
    x = torch.randn(1, 1, 64, 64)
    before, after = _prune_half(net, x)
    assert after < 0.35 * before
    assert net(x).shape == (1, 2, 64, 64)
    assert all(m.inplace for m in net.modules() if isinstance(m, torch.nn.LeakyReLU))  # flags restored


@pytest.mark.parametrize("use_v2", [False, True])
def test_monai_swin_unetr_prunes_convs_and_mlps_keeps_attention(use_v2: bool) -> None:
    # Alone, torch-pruning 1.6 fails inside window attention ("index 24 is out of bounds").
    nets = pytest.importorskip("monai.networks.nets")
    net = nets.SwinUNETR(spatial_dims=2, in_channels=1, out_channels=2, feature_size=24, use_v2=use_v2)
    attention = {n: tuple(p.shape) for n, p in net.named_parameters() if ".attn." in n}
    x = torch.randn(1, 1, 64, 64)
    before, after = _prune_half(net, x)
    assert after < 0.5 * before
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # parameter-free InstanceNorms were told their new width
        assert net(x).shape == (1, 2, 64, 64)
    assert {n: tuple(p.shape) for n, p in net.named_parameters() if ".attn." in n} == attention
    mlp = net.swinViT.layers1[0].blocks[0].mlp.linear1
    assert mlp.out_features == 2 * mlp.in_features  # hidden width 4x → 2x


def test_nnunet_plain_conv_unet_prunes_and_runs() -> None:
    arch = pytest.importorskip("dynamic_network_architectures.architectures.unet")
    net = arch.PlainConvUNet(1, 4, (16, 32, 64, 128), torch.nn.Conv2d, 3, (1, 2, 2, 2), (2, 2, 2, 2), 2, (2, 2, 2),
                             False, torch.nn.BatchNorm2d, None, None, None, torch.nn.LeakyReLU, {"inplace": True})
    x = torch.randn(1, 1, 64, 64)
    before, after = _prune_half(net, x)
    assert after < 0.35 * before
    assert net(x).shape == (1, 2, 64, 64)


def test_macs_target_stops_at_the_first_step_that_meets_it() -> None:
    from edgemed.models import StudentSpec, create_student

    net = create_student(StudentSpec(arch="unet2d", in_channels=3, num_classes=2))
    result = prune_module_(net, torch.randn(1, 3, 64, 64), PruneConfig(target_macs=0.5))
    assert result.macs[1] <= 0.5 * result.macs[0]
    assert 0.2 <= result.ratio <= 0.35  # MACs fall ~quadratically with the ratio: ~0.3 suffices
    assert result.macs[1] > 0.3 * result.macs[0]  # and it did not overshoot by a whole step's worth


def test_latency_target_is_measured_in_onnxruntime() -> None:
    from edgemed.models import StudentSpec, create_student

    net = create_student(StudentSpec(arch="mobile_unet2d", in_channels=1, num_classes=2))
    result = prune_module_(net, torch.randn(1, 1, 64, 64),
                           PruneConfig(target_latency_ms=1e4, latency_size=64, max_ratio=0.3))
    assert result.steps == 1 and result.latency_ms is not None and result.latency_ms[1] > 0
    with pytest.raises(ConfigError, match="not reached"):
        prune_module_(net, torch.randn(1, 1, 64, 64), PruneConfig(target_latency_ms=1e-6, latency_size=64,
                                                                    max_ratio=0.1))


def test_prune_config_takes_one_goal() -> None:
    assert PruneConfig().ratio == 0.5
    with pytest.raises(ConfigError, match="exactly one"):
        PruneConfig(ratio=0.3, target_macs=0.5)
    with pytest.raises(ConfigError, match="share of the unpruned MACs"):
        PruneConfig(target_macs=2.0)
