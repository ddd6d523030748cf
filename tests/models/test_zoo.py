"""The student zoo: sizes span ~50 k to ~2 M parameters, shapes hold, every student exports to ONNX."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from edgemed.errors import ConfigError
from edgemed.models import STUDENTS, StudentSpec, create_student, list_students


def _params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_zoo_spans_edge_sizes() -> None:
    sizes = {i.name: _params(create_student(StudentSpec(arch=i.name, in_channels=3, num_classes=2)))
             for i in list_students()}
    assert len(sizes) >= 3
    assert min(sizes.values()) <= 80_000, sizes
    assert max(sizes.values()) >= 1_500_000, sizes
    assert max(sizes.values()) <= 3_000_000, sizes


@pytest.mark.parametrize("arch", sorted(STUDENTS))
def test_student_shapes(arch: str) -> None:
    net = create_student(StudentSpec(arch=arch, in_channels=5, num_classes=3)).eval()
    out = net(torch.randn(2, 5, 64, 48))
    assert out.shape == (2, 3, 64, 48)
    assert 64 % net.stride == 0


@pytest.mark.parametrize("arch", sorted(STUDENTS))
def test_student_exports_to_onnx_opset17(arch: str, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    net = create_student(StudentSpec(arch=arch, in_channels=3, num_classes=2)).eval()
    x = torch.randn(2, 3, 64, 64)
    path = tmp_path / f"{arch}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (x,), str(path), opset_version=17, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}, "logits": {0: "batch", 2: "h", 3: "w"}},
                          dynamo=False)
    model = onnx.load(str(path))
    assert model.opset_import[0].version >= 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x2 = torch.randn(3, 3, 96, 80)  # another batch and size: the graph is dynamic
    with torch.inference_mode():
        expected = net(x2).numpy()
    got = session.run(None, {"x": x2.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-3)


def test_unknown_architecture_and_option() -> None:
    with pytest.raises(ConfigError, match="unknown student architecture"):
        StudentSpec(arch="vit_giant", in_channels=3, num_classes=2)
    with pytest.raises(ConfigError, match="does not take"):
        create_student(StudentSpec(arch="unet2d", in_channels=3, num_classes=2, kwargs={"depth": 9}))


def test_spec_records_the_defaults_it_was_built_with() -> None:
    # A stored spec must rebuild the same network even after the zoo's defaults change.
    spec = StudentSpec(arch="unet2d", in_channels=3, num_classes=2)
    assert spec.to_json()["kwargs"]["widths"] == list(STUDENTS["unet2d"].defaults["widths"])
    assert StudentSpec.from_json(spec.to_json()) == spec
    old = {"arch": "unet2d", "in_channels": 3, "num_classes": 2, "kwargs": {"widths": [8, 16, 32]}}
    assert StudentSpec.from_json(old).members == 1
