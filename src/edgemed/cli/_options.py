"""click helpers: options that take several values (`--scans a.nii b.nii`)."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["MultiValueOption", "overwrite_option", "shown_scan"]

# One flag name for every command that writes: see edgemed.artifacts.check_output for the rule.
overwrite_option = click.option(
    "--overwrite", is_flag=True,
    help="Replace an existing output of the same kind. Anything else at --out is refused, never deleted.")


class MultiValueOption(click.Option):
    """An option that swallows every following argument up to the next option, argparse-style.

    `--scans a.nii.gz b.nii.gz --organ liver` gives scans=("a.nii.gz", "b.nii.gz"). Repeating the
    option appends.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("multiple", True)
        super().__init__(*args, **kwargs)
        self._previous_parser_process: Any = None

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            opt = parser._long_opt.get(name) or parser._short_opt.get(name)
            if opt is None:
                continue
            self._previous_parser_process = opt.process

            def process(value: Any, state: Any, _opt: Any = opt) -> None:
                values = [value]
                while state.rargs and not state.rargs[0].startswith("-"):
                    values.append(state.rargs.pop(0))
                for v in values:
                    self._previous_parser_process(v, state)

            opt.process = process


def shown_scan(path: object) -> str:
    """A scan path as the CLI may print it (DICOM identifiers redacted; see `redacted_path`)."""
    from edgemed.io import redacted_path

    return "SCAN" if path is None else redacted_path(path)
