"""CLI groups (`edgemed measure …`, `edgemed trust …`) run the same commands as the old top-level names."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from edgemed.cli import _cli


def test_grouped_and_old_names_run_the_same_command() -> None:
    runner = CliRunner()
    grouped = runner.invoke(_cli, ["measure", "profiles", "--json"])
    old = runner.invoke(_cli, ["profiles", "--json"])
    assert grouped.exit_code == old.exit_code == 0, grouped.output
    assert json.loads(grouped.output) == json.loads(old.output)
    assert any(p["id"] == "jetson-orin-nano-8gb" for p in json.loads(grouped.output))


def test_trust_group_writes_keys(tmp_path: Path) -> None:
    res = CliRunner().invoke(_cli, ["trust", "keygen", "--private", str(tmp_path / "site.pem"),
                                    "--public", str(tmp_path / "site.pub.pem")])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site.pem", "site.pub.pem"]
    assert (tmp_path / "site.pub.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")


def test_help_lists_groups_not_aliases_and_a_group_refuses_other_commands() -> None:
    runner = CliRunner()
    top = runner.invoke(_cli, ["--help"]).output
    commands = top.split("Commands:")[1].split("Also runnable")[0]
    assert "measure" in commands and "trust" in commands and "  sign " not in commands
    assert "sign (= trust sign)" in " ".join(top.split())
    res = runner.invoke(_cli, ["trust", "distill"])
    assert res.exit_code == 2 and "No such command 'distill'" in res.output
