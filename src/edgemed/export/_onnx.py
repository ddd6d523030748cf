"""Student checkpoint → ONNX bundle, checked against the torch student before anything is written."""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from edgemed._deps import require
from edgemed.artifacts import (BUNDLE_KIND, BUNDLE_SCHEMA, MODEL_FILE, BundleMeta, OnnxBundle, StudentCheckpoint,
                               StudentSummary, TensorSpec, write_artifact)
from edgemed.errors import BackendError
from edgemed.export._config import OnnxExportConfig
from edgemed.export._parity import check_parity, measure_parity, parity_volumes
from edgemed.runtime.backends.ort import OrtSession

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "to_onnx"]

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
_TWO_GIB = 2**31


def to_onnx(student: StudentCheckpoint | str | os.PathLike[str], out: str | os.PathLike[str],
            config: OnnxExportConfig = OnnxExportConfig(), *, overwrite: bool = False) -> OnnxBundle:
    """Export a student to a single-file ONNX model and write it as a bundle the runtime can load.

    The exported graph takes "image" (batch, 2c+1, height, width) 2.5D slice stacks and returns
    "logits" (batch, classes, height, width). Before anything is written, ONNX Runtime and the
    torch student are run on the same prepared slices of `config.parity_volumes` (else a phantom);
    the largest |Δlogit| and the per-organ mask Dice are recorded in the manifest.

    Args:
        student: A student checkpoint (or its directory) from `edgemed.compress.distill`.
        out: The bundle directory to write (replaced atomically).
        config: Opset, dynamic batch, simplification and parity tolerances.
        overwrite: Replace an ONNX bundle at `out`; anything else there is refused (`check_output`).

    Returns:
        The written bundle.

    Raises:
        ArtifactError: The student checkpoint is missing, damaged or altered.
        ParityError: The exported model disagrees with the student beyond tolerance (names the
            worst value); nothing is written.
        BackendError: torch's exporter, onnxslim or the ONNX checker failed.
        MissingDependencyError: torch, onnx, onnxruntime (or onnxslim when simplifying) is missing.

    Example:
        >>> bundle = to_onnx("runs/liver", "out/liver.edgemed",
        ...                  OnnxExportConfig(opset=17, parity_volumes=("ct.nii.gz",)))
        >>> bundle.parity["max_abs_logit_diff"], bundle.parity["mask_dice"]
        (2.1e-06, {'liver': 1.0})
    """
    from edgemed.artifacts import check_output

    check_output(out, kind=BUNDLE_KIND, overwrite=overwrite,
                 inputs=[student.path if isinstance(student, StudentCheckpoint) else student,
                         *(config.parity_volumes or ())])
    ckpt = student if isinstance(student, StudentCheckpoint) else StudentCheckpoint.load(student)
    torch = require("torch")
    onnx = require("onnx")
    from edgemed.models import load_student

    net = load_student(ckpt)
    spec = ckpt.preprocess
    volumes = parity_volumes(config.parity_volumes)  # read scans first: a bad path fails before any export work
    with tempfile.TemporaryDirectory(prefix="edgemed-export-") as tmp:
        path = Path(tmp) / MODEL_FILE
        _export(torch, net, path, spec.in_channels, _dummy_size(net, spec.pad_multiple), config)
        model = onnx.load(str(path))
        if config.simplify:
            model = _simplify(model)
        if config.precision == "fp16":
            model = _to_fp16(model)
        try:
            onnx.checker.check_model(model, full_check=True)
        except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
            raise BackendError(f"the exported ONNX graph is invalid ({err}); re-export with simplify=False.") from err
        if model.ByteSize() >= _TWO_GIB:
            raise BackendError("the model is over 2 GiB, beyond a single-file ONNX bundle; prune the student first.")
        model_bytes = model.SerializeToString()  # one file: weights inline, no model.onnx.data beside it
        path.write_bytes(model_bytes)
        with OrtSession(path) as session:
            parity = measure_parity(net, session, volumes, spec, ckpt.organs, max_slices=config.parity_max_slices,
                                    batch=None if config.dynamic_batch else 1)
    check_parity(parity, max_abs_logit_diff=config.max_abs_logit_diff, min_mask_dice=config.min_mask_dice)
    metadata = _metadata(ckpt, model, config, parity.to_json(max_abs_logit_diff=config.max_abs_logit_diff,
                                                             min_mask_dice=config.min_mask_dice), torch, onnx)
    write_artifact(out, kind=BUNDLE_KIND, schema_version=BUNDLE_SCHEMA, payload={MODEL_FILE: model_bytes},
                   metadata=metadata.to_json(), parent=ckpt.manifest.digest, overwrite=overwrite)
    return OnnxBundle.load(out)


def _dummy_size(net: Any, pad_multiple: int) -> int:
    """A trace size the network's stride and the spec's padding both divide (≥ 32 px)."""
    m = math.lcm(int(getattr(net, "stride", 1)), pad_multiple)
    return m * max(1, -(-32 // m))


def _export(torch: ModuleType, net: Any, path: Path, channels: int, size: int, config: OnnxExportConfig) -> None:
    # The TorchScript exporter (dynamo=False), because in torch 2.13 the dynamo exporter only
    # writes opset >= 18 and down-converts to 17 with onnx's C converter (a fallback it warns
    # about), names output dims "4*((height//4))" instead of "height", puts weights in a
    # model.onnx.data side file and takes ~25x longer. Both give the same graph for these CNNs.
    batch = 2 if config.dynamic_batch else 1
    axes = {0: "batch", 2: "height", 3: "width"} if config.dynamic_batch else {2: "height", 3: "width"}
    dummy = torch.zeros(batch, channels, size, size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # "legacy exporter": chosen on purpose, see above
            torch.onnx.export(net, (dummy,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              opset_version=config.opset, dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
                              do_constant_folding=True, dynamo=False)
    except (torch.onnx.errors.OnnxExporterError, RuntimeError) as err:
        raise BackendError(f"torch.onnx.export failed at opset {config.opset} ({err}). Try opset 17, or report "
                           "the student architecture.") from err


def _simplify(model: Any) -> Any:
    onnxslim = require("onnxslim")
    try:
        return onnxslim.slim(model)
    except Exception as err:  # noqa: BLE001  onnxslim's passes raise arbitrary types; all mean "could not simplify"
        raise BackendError(f"onnxslim could not simplify the exported graph ({type(err).__name__}: {err}). "
                           "Export with simplify=False (CLI: --no-simplify).") from err


def _to_fp16(model: Any) -> Any:
    """Weights and arithmetic in float16; graph inputs and outputs stay float32.

    ONNX Runtime's converter inserts the casts at the graph's edges (keep_io_types), so the
    runtime feeds float32 as for any bundle; Resize and the ops ONNX Runtime lists as unsafe in
    fp16 stay float32.
    """
    require("onnxruntime")
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "value out of fp16 range, clamped": checked by parity
            half = OnnxModel(convert_float_to_float16(model, keep_io_types=True, op_block_list=["Resize"]))
        half.topological_sort()  # the converter appends its input casts at the end of the node list
        return half.model
    except Exception as err:  # noqa: BLE001  the converter raises arbitrary types on graphs it cannot handle
        raise BackendError(f"could not convert the graph to fp16 ({type(err).__name__}: {err}); "
                           "export fp32 and let TensorRT build fp16 from it.") from err


def _tensor_specs(onnx: ModuleType, values: Any) -> tuple[TensorSpec, ...]:
    specs = []
    for value in values:
        t = value.type.tensor_type
        shape = tuple(d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in t.shape.dim)
        dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name
        specs.append(TensorSpec(value.name, dtype, shape))
    return tuple(specs)


def _metadata(ckpt: StudentCheckpoint, model: Any, config: OnnxExportConfig, parity: dict[str, Any],
              torch: ModuleType, onnx: ModuleType) -> BundleMeta:
    meta = ckpt.meta
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), config.opset)
    arch = ckpt.architecture
    versions = {"torch": torch.__version__, "onnx": onnx.__version__}
    if config.simplify:
        versions["onnxslim"] = require("onnxslim").__version__
    return BundleMeta(
        format="onnx", model=MODEL_FILE, precision=config.precision, opset=int(opset),
        inputs=_tensor_specs(onnx, model.graph.input), outputs=_tensor_specs(onnx, model.graph.output),
        preprocess=ckpt.preprocess, postprocess=ckpt.postprocess, organs=ckpt.organs,
        label_map=meta.label_map_name, parity=parity,
        student=StudentSummary(digest=ckpt.manifest.digest, arch=arch.get("arch"), architecture=arch,
                               parameters=meta.training.parameters, validation_dice=dict(meta.validation.dice),
                               teacher=meta.teacher),
        export={"exporter": "torch.onnx (TorchScript)", "dynamic_batch": config.dynamic_batch,
                "simplified": config.simplify, "nodes": len(model.graph.node), "versions": versions},
        qc=meta.qc,  # the runtime QC's reference ranges travel with the model (None: not calibrated)
    )
