"""Progress bars for long compression work (tqdm; silent when turned off)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["progress_bar"]


def progress_bar(it: Iterable[Any], enabled: bool, **kwargs: Any) -> Any:
    """A tqdm bar over `it`; when not `enabled`, one that prints nothing (`set_postfix` still works)."""
    from tqdm.auto import tqdm

    return tqdm(it, leave=True, disable=not enabled, **kwargs)
