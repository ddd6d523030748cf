"""Zoo students exported to ONNX for the benchmark suites (torch; benchmarks only)."""

from __future__ import annotations

import warnings
from pathlib import Path

# The liver student's input at 3 mm: a batch of 16 slices of 2 x 4 + 1 context channels, 128 x 112 pixels.
ZOO_INPUT = (16, 9, 128, 112)


def export_zoo_student(arch: str, path: Path, kwargs: dict | None = None) -> Path:
    """A freshly initialised zoo student (weights do not change latency) as an ONNX file, batch and size dynamic."""
    import torch

    from edgemed.models import StudentSpec, create_student

    net = create_student(StudentSpec(arch=arch, in_channels=ZOO_INPUT[1], num_classes=2, kwargs=kwargs or {})).eval()
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice: chosen on purpose (see export)
        torch.onnx.export(net, (torch.zeros(2, *ZOO_INPUT[1:]),), str(path), input_names=["image"],
                          output_names=["logits"], opset_version=17, dynamic_axes={"image": axes, "logits": axes},
                          do_constant_folding=True, dynamo=False)
    return path
