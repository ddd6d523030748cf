"""Screenshot an `edgemed compress` report.html to a PNG (full page), for issues and slides.

Uses playwright's Chromium when the `playwright` package and its browser are installed, else a
Chromium/Chrome binary on PATH (headless `--screenshot`). Neither is a dependency of edgemed;
install one outside the project environment, e.g.:

    python -m venv /tmp/shot && /tmp/shot/bin/pip install playwright && /tmp/shot/bin/playwright install chromium
    /tmp/shot/bin/python benchmarks/suite/report_screenshot.py runs/totalseg_4organs/report.html --out report.png

or `apt-get install chromium` and use the project's Python. Exit 2 (with these instructions) when
neither is available. `--result JSON` also records which report became which PNG, with what (the
suite's steps write benchmarks/results/compress_totalseg*_report.screenshot.json beside the PNGs).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import config_from_args, write_result  # noqa: E402

BINARIES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
HELP = """no browser to render the report with: neither playwright (with its Chromium) nor a chromium binary
({binaries}) was found. Either
  pip install playwright && playwright install chromium      (in a separate virtualenv, not edgemed's)
or install Chromium (e.g. apt-get install chromium), then rerun this script.
The report itself needs no browser plugin: open {report} in any browser."""


def with_playwright(report: Path, out: Path, width: int) -> bool:
    """Full-page screenshot with playwright; False when playwright or its browser is missing."""
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        return False
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch()
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(report.resolve().as_uri())
            page.screenshot(path=str(out), full_page=True)
            browser.close()
    except Error as err:  # e.g. "Executable doesn't exist": playwright install chromium was not run
        print(f"playwright could not start Chromium ({str(err).splitlines()[0]})", file=sys.stderr)
        return False
    return True


def with_binary(report: Path, out: Path, width: int, height: int) -> bool:
    """Screenshot with a headless Chromium binary (fixed window height); False when none is on PATH."""
    binary = next((b for b in map(shutil.which, BINARIES) if b), None)
    if binary is None:
        return False
    with tempfile.TemporaryDirectory(prefix="edgemed-shot-") as profile:
        cmd = [binary, "--headless=new", "--disable-gpu", "--no-sandbox", "--hide-scrollbars", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic",
               f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={out.resolve()}",
               report.resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not out.exists():
        print(f"{binary} failed ({done.returncode}): {done.stderr.strip()[-400:]}", file=sys.stderr)
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="report.html from edgemed compress")
    parser.add_argument("--out", type=Path, default=None, help="PNG to write [default: beside the report]")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=4000, help="window height for the chromium binary path")
    parser.add_argument("--result", type=Path, default=None, help="also record the screenshot in this result JSON")
    args = parser.parse_args()
    if not args.report.is_file():
        print(f"{args.report} not found; run edgemed compress first", file=sys.stderr)
        return 2
    out = args.out or args.report.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    renderer = "playwright" if with_playwright(args.report, out, args.width) else \
        "chromium" if with_binary(args.report, out, args.width, args.height) else None
    if renderer is not None:
        if args.result is not None:
            write_result(args.result, benchmark="report_screenshot", script=__file__, config=config_from_args(args),
                         metrics={"png": out, "bytes": out.stat().st_size, "renderer": renderer,
                                  "seconds": round(time.perf_counter() - t0, 1)})
        print(f"wrote {out}")
        return 0
    print(HELP.format(binaries=", ".join(BINARIES), report=args.report), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
