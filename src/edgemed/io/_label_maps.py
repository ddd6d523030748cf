"""Label maps: the names of the integer classes in a segmentation, and organ lookup by name or id."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edgemed.errors import ConfigError, InputError

__all__ = ["BUILTIN_LABEL_MAPS", "LabelMap", "load_label_map"]

BUILTIN_LABEL_MAPS = ("totalsegmentator", "totalsegmentator_mr")


@dataclass(frozen=True)
class LabelMap:
    """Names of the classes of a label map; id 0 is always background.

    Attributes:
        name: "totalsegmentator", or the JSON file's stem.
        labels: id → name, ids ≥ 1.
    """

    name: str
    labels: Mapping[int, str]

    def __post_init__(self) -> None:
        if 0 in self.labels:
            raise ConfigError(f"label map {self.name!r}: id 0 is reserved for background; start at 1.")
        names = list(self.labels.values())
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"label map {self.name!r}: names used twice: {', '.join(dupes)}.")

    def resolve(self, organs: Iterable[str | int]) -> tuple[int, ...]:
        """Ids of the organs asked for by name or id (ints or digit strings), in the order asked.

        Raises:
            ConfigError: Unknown organ, with the closest names as suggestions.
        """
        by_name = {n.lower(): i for i, n in self.labels.items()}
        ids: list[int] = []
        for organ in organs:
            key = str(organ).strip()
            if key.isdigit() and int(key) in self.labels:
                ids.append(int(key))
            elif key.lower() in by_name:
                ids.append(by_name[key.lower()])
            else:
                close = difflib.get_close_matches(key.lower(), list(by_name), n=3)
                hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                raise ConfigError(
                    f"organ {key!r} is not in label map {self.name!r}.{hint} "
                    f"List the names with: edgemed inspect --label-map {self.name}"
                )
        if len(set(ids)) != len(ids):
            raise ConfigError(f"organ list {list(organs)!r} names the same class twice.")
        if not ids:
            raise ConfigError("no organ given; name at least one, e.g. --organ liver.")
        return tuple(ids)

    def name_of(self, label_id: int) -> str:
        """The class name of `label_id` ("background" for 0)."""
        return "background" if label_id == 0 else self.labels[label_id]

    def to_json(self) -> dict[str, object]:
        """A JSON-ready dict, the same form `load_label_map` reads."""
        return {"name": self.name, "labels": {str(i): n for i, n in sorted(self.labels.items())}}


def load_label_map(spec: str | Path) -> LabelMap:
    """A built-in label map by name ("totalsegmentator") or a JSON file.

    The JSON form is ``{"name": "...", "labels": {"1": "liver", "2": "spleen"}}`` or just the
    ``{"1": "liver", ...}`` mapping.

    Raises:
        ConfigError: Neither a built-in name nor a readable JSON label map.
    """
    text = str(spec)
    if text in BUILTIN_LABEL_MAPS:
        raw = json.loads(resources.files("edgemed.io").joinpath("label_maps", f"{text}.json").read_text())
        return _from_json(raw, text)
    path = Path(text)
    if not path.exists():
        raise ConfigError(
            f"label map {text!r} is neither built in ({', '.join(BUILTIN_LABEL_MAPS)}) nor an existing JSON file."
        )
    try:
        raw = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"label map {path} is not readable JSON ({err}).") from err
    return _from_json(raw, path.stem)


def _from_json(raw: object, default_name: str) -> LabelMap:
    if not isinstance(raw, dict):
        raise ConfigError(f"label map {default_name!r}: expected a JSON object of id → name.")
    labels = raw.get("labels", raw)
    name = str(raw.get("name", default_name)) if "labels" in raw else default_name
    try:
        parsed = {int(k): str(v) for k, v in labels.items()}  # type: ignore[union-attr]
    except (AttributeError, ValueError) as err:
        raise ConfigError(f"label map {name!r}: keys must be integer ids and values names ({err}).") from err
    return LabelMap(name, parsed)
