"""Does every command in the README succeed on the data it names? (issue 22)

Reads the fenced ```bash blocks of README.md, in order, and runs each `edgemed ...` command as a
reader would after `source .venv/bin/activate`: in a scratch folder (runs/readme/, emptied first),
with the variables the README sets (D, CT, TEACHER) and .venv/bin on PATH, one command at a time
(a command's `\\` continuation lines joined). The install and test commands are what CI runs
(`.ci/run`) and are not repeated here; `edgemed demo` is run as `edgemed demo` after its install.
`edgemed compress` commands are checked by recipes_check.py (an hour for the default recipe) and
are listed here as "see recipes_check".

Recorded per command: exit code, wall seconds, the load average before it, and the last line it
printed. A command that exits non-zero fails the check (exit 3 of `measure check` on a busy machine
is "inconclusive", recorded as such).

    .venv/bin/python benchmarks/suite/readme_commands.py [--readme README.md] [--only distill inspect ...]

Writes benchmarks/results/readme_commands.json (or --out).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import DATA, RESULTS, ROOT, config_from_args, write_result  # noqa: E402

SCRATCH = ROOT / "runs" / "readme"
BLOCK = re.compile(r"^[ \t]*```bash\n(.*?)^[ \t]*```", re.DOTALL | re.MULTILINE)


def readme_commands(text: str) -> tuple[list[str], list[str]]:
    """(variable assignments, edgemed commands) from the README's bash blocks, in order."""
    setup, commands = [], []
    for block in BLOCK.findall(text):
        lines: list[str] = []
        for raw in block.splitlines():
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1].rstrip() + " " + raw.strip()
            else:
                lines.append(raw.strip())
        for line in lines:
            if not line or line.startswith("#"):
                continue
            if re.match(r"^[A-Z_]+=", line):
                setup.append(line)
            elif "edgemed" in line and "pytest" not in line:
                # "bash scripts/install.sh && .venv/bin/edgemed demo": the install is CI's; run the rest.
                commands.append(line.split("&&")[-1].strip().replace(".venv/bin/", ""))
    return setup, commands


def artifact_facts(cmd: str) -> dict[str, Any]:
    """What a command's `--out` artifact records, when it is a student: held-out Dice, training threads."""
    import json

    words = cmd.split()
    if "--out" not in words or words.index("--out") + 1 >= len(words):
        return {}
    manifest = SCRATCH / words[words.index("--out") + 1] / "manifest.json"
    try:
        meta = json.loads(manifest.read_text())["metadata"]
    except (OSError, ValueError, KeyError):
        return {}
    if "validation" not in meta or "training" not in meta:
        return {}
    return {"heldout_dice": meta["validation"].get("dice"), "threads": meta["training"].get("threads"),
            "training_seconds": meta["training"].get("seconds")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--only", nargs="*", default=None, help="subcommands to run (e.g. distill inspect); default all")
    parser.add_argument("--out", type=Path, default=RESULTS / "readme_commands.json")
    parser.add_argument("--annotate", type=Path, default=None,
                        help="add the students' facts from runs/readme/ to an existing result (nothing reruns)")
    args = parser.parse_args()
    if args.annotate is not None:
        import json

        prev = json.loads(args.annotate.read_text())
        rows = [{**r, **artifact_facts(r["command"])} for r in prev["metrics"]["commands"]]
        write_result(args.out, benchmark="readme_commands", script=__file__,
                     config={**prev["config"], "annotated_from": str(args.annotate)},
                     metrics={**prev["metrics"], "commands": rows})
        print(f"wrote {args.out}")
        return 0
    setup, commands = readme_commands(args.readme.read_text(encoding="utf-8"))
    if SCRATCH.exists():
        shutil.rmtree(SCRATCH)  # our own scratch folder
    SCRATCH.mkdir(parents=True)
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "EDGEMED_DATA": str(DATA)}
    prelude = "; ".join(setup)
    rows: list[dict[str, Any]] = []
    for cmd in commands:
        sub = cmd.split()[1] if cmd.startswith("edgemed ") and len(cmd.split()) > 1 else cmd
        if sub == "compress":
            rows.append({"command": cmd, "status": "see recipes_check.py (recipes_check.json)"})
            continue
        if args.only is not None and sub not in args.only:
            continue
        load = float(Path("/proc/loadavg").read_text().split()[0])
        t0 = time.perf_counter()
        proc = subprocess.run(["bash", "-c", f"{prelude}; {cmd}"], cwd=SCRATCH, env=env, capture_output=True,
                              text=True)
        wall = time.perf_counter() - t0
        last = (proc.stdout.strip().splitlines() or proc.stderr.strip().splitlines() or [""])[-1]
        status = "ok" if proc.returncode == 0 else \
            "inconclusive (busy machine)" if proc.returncode == 3 and " check " in f" {cmd} " else "FAILED"
        rows.append({"command": cmd, "exit_code": proc.returncode, "status": status, "wall_s": round(wall, 1),
                     "load_before": load, "last_line": last[:300], **artifact_facts(cmd),
                     **({"stderr_tail": proc.stderr.strip().splitlines()[-5:]} if proc.returncode else {})})
        print(f"[{status}] {wall:7.1f} s  {cmd}", flush=True)
    failed = [r for r in rows if r.get("status") == "FAILED"]
    write_result(args.out, benchmark="readme_commands", script=__file__,
                 config=config_from_args(args, setup=setup, scratch=str(SCRATCH.relative_to(ROOT))),
                 metrics={"commands": rows, "ran": sum("exit_code" in r for r in rows), "failed": len(failed)})
    print(f"wrote {args.out}: {len(failed)} failed of {sum('exit_code' in r for r in rows)} run")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
