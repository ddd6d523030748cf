"""Parity of an exported model with its torch student on real slices (torch imported by the caller)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgemed.artifacts import OrganChannel, PreprocessSpec
from edgemed.errors import ParityError
from edgemed.io import Volume, prepare_volume, read_volume
from edgemed.runtime import Session, iter_slice_batches

__all__ = ["ParityResult", "check_parity", "measure_parity", "parity_volumes"]


@dataclass
class ParityResult:
    """How closely the exported model matches the torch student.

    Attributes:
        backend: The runtime the export was checked on.
        volumes: Sources of the volumes compared.
        slices: Axial slices compared.
        max_abs_logit_diff: Largest |Δlogit| over every voxel and class.
        worst: Where that was: {"volume", "slice"}.
        mask_dice: Per organ, Dice between the argmax masks (image region, padding excluded).
    """

    backend: str
    volumes: list[str] = field(default_factory=list)
    slices: int = 0
    max_abs_logit_diff: float = 0.0
    worst: dict[str, Any] = field(default_factory=dict)
    mask_dice: dict[str, float] = field(default_factory=dict)

    def to_json(self, *, max_abs_logit_diff: float, min_mask_dice: float) -> dict[str, Any]:
        """The manifest record, with the tolerances it was held to."""
        return {"backend": self.backend, "reference": "torch student", "volumes": self.volumes,
                "slices": self.slices, "max_abs_logit_diff": self.max_abs_logit_diff, "worst": self.worst,
                "mask_dice": self.mask_dice, "passed": True,
                "tolerance": {"max_abs_logit_diff": max_abs_logit_diff, "min_mask_dice": min_mask_dice}}


def parity_volumes(given: Sequence[Volume | str | Any] | None) -> list[Volume]:
    """The volumes to compare on: those given (paths are read), else a generated phantom."""
    if given is None:
        from edgemed.phantom import make_phantom

        ct, _ = make_phantom(seed=0)
        return [ct]
    return [v if isinstance(v, Volume) else read_volume(v) for v in given]


def measure_parity(net: Any, session: Session, volumes: Sequence[Volume], spec: PreprocessSpec,
                   organs: Sequence[OrganChannel], *, max_slices: int, batch: int | None) -> ParityResult:
    """Run the torch `net` and the exported `session` on the same prepared slices and compare.

    Args:
        batch: The model's fixed batch size, or None when dynamic (then 8 slices per call).
    """
    import torch

    name_in, name_out = session.inputs[0].name, session.outputs[0].name
    result = ParityResult(backend=getattr(session, "description", type(session).__name__))
    inter = dict.fromkeys((o.name for o in organs), 0)
    total = dict.fromkeys((o.name for o in organs), 0)
    for vol_index, volume in enumerate(volumes):
        source = volume.source or f"volume {vol_index}"
        result.volumes.append(source)
        image, geom = prepare_volume(volume, spec)
        ks = np.unique(np.linspace(0, image.shape[0] - 1, min(max_slices, image.shape[0])).round().astype(int))
        (ox, oy), (rx, ry) = geom.offset_xy, geom.resampled_xy
        # both models see the very same (padded) batches, so per-batch logits compare directly
        for chunk, x in iter_slice_batches(image, ks, context=spec.context_slices, step=geom.context_step,
                                           batch_size=8, fixed_batch=batch):
            with torch.inference_mode():
                ref = net(torch.from_numpy(x)).numpy()[: len(chunk)]
            got = session.run({name_in: x})[name_out][: len(chunk)]
            diff = np.abs(got.astype(np.float64) - ref)
            if diff.max() > result.max_abs_logit_diff or not result.worst:
                n = int(np.unravel_index(diff.argmax(), diff.shape)[0])
                result.max_abs_logit_diff = float(diff.max())
                result.worst = {"volume": source, "slice": int(chunk[n])}
            a = got.argmax(1)[:, ox:ox + rx, oy:oy + ry]
            b = ref.argmax(1)[:, ox:ox + rx, oy:oy + ry]
            for organ in organs:
                ma, mb = a == organ.channel, b == organ.channel
                inter[organ.name] += int(np.count_nonzero(ma & mb))
                total[organ.name] += int(np.count_nonzero(ma)) + int(np.count_nonzero(mb))
        result.slices += len(ks)
    result.mask_dice = {k: (round(2 * inter[k] / total[k], 6) if total[k] else 1.0) for k in inter}
    return result


def check_parity(result: ParityResult, *, max_abs_logit_diff: float, min_mask_dice: float) -> None:
    """Raise ParityError naming the worst value when `result` is outside the tolerances."""
    where = f"{result.worst.get('volume')}, slice {result.worst.get('slice')}"
    if not result.max_abs_logit_diff <= max_abs_logit_diff:
        raise ParityError(
            f"the ONNX model differs from the torch student by max |Δlogit| = {result.max_abs_logit_diff:.3g} "
            f"({where}; {result.backend}), above max_abs_logit_diff={max_abs_logit_diff:g}. Nothing was written. "
            "Re-export without simplification (simplify=False) to see whether onnxslim caused it, or try another "
            "opset; report the model if the plain export differs."
        )
    worst_organ = min(result.mask_dice, key=result.mask_dice.__getitem__, default=None)
    if worst_organ is not None and result.mask_dice[worst_organ] < min_mask_dice:
        raise ParityError(
            f"the ONNX and torch masks of {worst_organ} agree only to Dice {result.mask_dice[worst_organ]:.6f} "
            f"(over {result.slices} slices of {', '.join(result.volumes)}), below min_mask_dice={min_mask_dice:g}. "
            "Nothing was written. Re-export with simplify=False, or lower min_mask_dice only if the logits "
            f"already agree (max |Δlogit| = {result.max_abs_logit_diff:.3g})."
        )
