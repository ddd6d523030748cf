"""Every `edgemed` command in the README names a real command and only options it has (issue 22).

The commands themselves run in benchmarks/suite/readme_commands.py (a real CT, minutes to an hour);
this catches a renamed command or flag in seconds.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks" / "suite"))
sys.path.insert(0, str(ROOT / "benchmarks"))
from readme_commands import readme_commands  # noqa: E402

COMMANDS = readme_commands((ROOT / "README.md").read_text(encoding="utf-8"))[1]


def test_the_readme_tour_is_found() -> None:
    subs = {shlex.split(c)[1] for c in COMMANDS}
    assert {"demo", "distill", "prune", "export", "quantize", "segment", "measure", "compress"} <= subs


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_names_a_real_command_and_its_options(command: str) -> None:
    from edgemed.cli import _cli

    words = shlex.split(command, comments=True)[1:]
    cmd: click.Command = _cli
    ctx = click.Context(_cli)
    while isinstance(cmd, click.Group):
        sub = cmd.get_command(ctx, words[0])
        assert sub is not None, f"`edgemed {words[0]}` is not a command ({command})"
        cmd, words = sub, words[1:]
    known = {o for p in cmd.params for o in (*getattr(p, "opts", ()), *getattr(p, "secondary_opts", ()))}
    used = {w.split("=")[0] for w in words if w.startswith("-")}
    assert used <= known, f"{command}: unknown option(s) {sorted(used - known)}"
