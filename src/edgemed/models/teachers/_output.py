"""What every teacher returns (`TeacherOutput`) and the `Teacher` protocol the four kinds implement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

import numpy as np

from edgemed.errors import ConfigError

if TYPE_CHECKING:
    from edgemed.io import Volume

__all__ = ["Teacher", "TeacherOutput"]

ScoreKind = Literal["labels", "logits", "probs"]


@dataclass(frozen=True, kw_only=True)
class TeacherOutput:
    """What any teacher says about one volume, on that volume's own voxel grid.

    `labels` is always present: when a teacher gives only scores, it is their argmax, mapped to
    label ids.

    Attributes:
        class_ids: Label id (in the teacher's label map) of each score channel; 0 = background.
            For kind="labels" these are the ids the teacher can emit (informational).
        kind: "logits" or "probs" when `scores` holds them, "labels" when only `labels` exists.
        labels: (X, Y, Z) label ids, uint8 (or int16 when an id exceeds 255).
        scores: (C, X, Y, Z) float32 logits or probabilities, C == len(class_ids); None for
            kind="labels".
    """

    class_ids: tuple[int, ...]
    kind: ScoreKind
    labels: np.ndarray | None = None
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        ids = tuple(int(i) for i in self.class_ids)
        object.__setattr__(self, "class_ids", ids)
        if len(set(ids)) != len(ids) or any(i < 0 for i in ids):
            raise ConfigError(f"class_ids {ids} must be distinct non-negative label ids.")
        if self.kind not in ("labels", "logits", "probs"):
            raise ConfigError(f"kind={self.kind!r}; use 'labels', 'logits' or 'probs'.")
        if self.kind == "labels":
            if self.labels is None or self.labels.ndim != 3:
                raise ConfigError("a kind='labels' teacher output needs a 3D `labels` array.")
            return
        if self.scores is None or self.scores.ndim != 4:
            raise ConfigError(f"a kind={self.kind!r} teacher output needs (C, X, Y, Z) `scores`.")
        if self.scores.shape[0] != len(ids):
            raise ConfigError(
                f"the teacher gives {self.scores.shape[0]} channels but class_ids has {len(ids)} entries "
                f"{ids}; set class_ids to one label id per output channel."
            )
        object.__setattr__(self, "scores", np.asarray(self.scores, dtype=np.float32))
        if self.labels is None:
            lut = np.asarray(ids, dtype=_label_dtype(ids))
            object.__setattr__(self, "labels", lut[np.argmax(self.scores, axis=0)])
        elif self.labels.shape != self.scores.shape[1:]:
            raise ConfigError(f"labels {self.labels.shape} and scores {self.scores.shape} are on different grids.")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The voxel grid (X, Y, Z) this output lies on."""
        assert self.labels is not None  # set in __post_init__
        return tuple(int(s) for s in self.labels.shape)  # type: ignore[return-value]

    def probabilities(self, ids: Sequence[int], *, temperature: float = 1.0) -> np.ndarray:
        """Class probabilities for the organs `ids`, everything else lumped into channel 0.

        Logits go through a softmax of ``logits / temperature``; probabilities are re-tempered as
        ``p ** (1 / temperature)`` renormalised (the same thing, since p = softmax(logits)). A label map
        gives one-hot channels whatever the temperature.

        Args:
            ids: Label ids of the organs, in the order wanted (not 0).
            temperature: > 1 softens, < 1 sharpens.

        Returns:
            float32 (1 + len(ids), X, Y, Z): channel 0 = P(not any of ids), channel i = P(ids[i-1]).

        Raises:
            ConfigError: An id the teacher has no channel for, a repeated id, id 0, or temperature ≤ 0.

        Example:
            >>> out.probabilities([5], temperature=2.0).shape  # liver vs rest   # doctest: +SKIP
            (2, 122, 101, 112)
        """
        ids = self._check_ids(ids)
        if not temperature > 0:
            raise ConfigError(f"temperature={temperature}; use a positive number (1.0 = unchanged).")
        if self.kind == "labels":
            onehot = np.zeros((1 + len(ids), *self.shape), dtype=np.float32)
            onehot[1:] = np.stack([self.labels == i for i in ids])
            onehot[0] = 1.0 - onehot[1:].sum(axis=0)
            return onehot
        assert self.scores is not None
        self._check_channels(ids)
        if self.kind == "probs" and temperature == 1.0:
            z = self.scores / self.scores.sum(axis=0, keepdims=True)
        else:
            if self.kind == "logits":
                z = self.scores / np.float32(temperature)
            else:
                z = np.log(np.clip(self.scores, 1e-12, None)) / np.float32(temperature)
            z -= z.max(axis=0, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=0, keepdims=True)
        picked = [self.class_ids.index(i) for i in ids]
        rest = [c for c in range(len(self.class_ids)) if c not in picked]
        out = np.empty((1 + len(ids), *self.shape), dtype=np.float32)
        # Summing the other channels (not 1 - picked) keeps channel 0 exact when it is tiny.
        out[0] = z[rest].sum(axis=0) if rest else 0.0
        out[1:] = z[picked]
        return out

    def mask(self, ids: Sequence[int]) -> np.ndarray:
        """uint8 (X, Y, Z): i where the teacher says ids[i-1], 0 elsewhere (other organs included).

        Raises:
            ConfigError: For a scoring teacher, an id it has no channel for; a label map simply
                gives an empty mask for an organ absent from it.
        """
        ids = self._check_ids(ids)
        if self.kind != "labels":
            self._check_channels(ids)
        assert self.labels is not None
        out = np.zeros(self.shape, dtype=np.uint8)
        for i, label_id in enumerate(ids, start=1):
            out[self.labels == label_id] = i
        return out

    def _check_channels(self, ids: tuple[int, ...]) -> None:
        missing = [i for i in ids if i not in self.class_ids]
        if missing:
            raise ConfigError(
                f"the teacher has no channel for label id(s) {missing}; its channels are {self.class_ids}."
            )

    @staticmethod
    def _check_ids(ids: Sequence[int]) -> tuple[int, ...]:
        if isinstance(ids, (int, np.integer)):
            ids = [int(ids)]
        ids = tuple(int(i) for i in ids)
        if not ids:
            raise ConfigError("no organ id given; pass at least one label id, e.g. [5] for the liver.")
        if 0 in ids:
            raise ConfigError("id 0 is background; ask for organ ids (background is channel 0 anyway).")
        if len(set(ids)) != len(ids):
            raise ConfigError(f"organ ids {list(ids)} name the same class twice.")
        return ids


def _label_dtype(ids: Sequence[int]) -> type:
    return np.uint8 if max(ids, default=0) < 256 else np.int16


@runtime_checkable
class Teacher(Protocol):
    """Anything that turns a volume into a `TeacherOutput` on that volume's grid."""

    def identity(self) -> dict[str, object]:
        """kind, name and sha256 of the weights: no absolute paths, nothing patient-related."""
        ...

    def predict(self, volume: Volume) -> TeacherOutput:
        """The teacher's opinion on `volume`, resampled back onto its grid."""
        ...
