"""Fuzz edgemed's loaders (NIfTI, NIfTI.gz, label maps, DICOM, manifest, bundle) with >= 100 000 inputs.

Contract: each input loads or raises an EdgemedError within the time limit; anything else (a
library exception reaching the user, a hang, a crash of this process) is a finding. The inputs are
hypothesis-generated mutations of valid files (tests/_fuzz_targets.py); CI runs 150 per loader
(tests/io/test_fuzz_loaders.py).

    .venv/bin/python benchmarks/suite/fuzz_loaders.py [--total 102000] [--out benchmarks/results/fuzz_loaders.json]

Writes the JSON after every target (a stopped run keeps what it measured). Exit status 1 on findings.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import RESULTS, ROOT, config_from_args, write_result  # noqa: E402

sys.path.insert(0, str(ROOT / "tests"))
from _fuzz_targets import TIME_LIMIT_S, make_targets, strategy  # noqa: E402
from _phantom_pairs import tiny_liver_bundle  # noqa: E402
from hypothesis import HealthCheck, given, seed, settings  # noqa: E402


def _fuzz(target, n: int) -> None:  # type: ignore[no-untyped-def]
    """Run until `target` has seen n inputs (hypothesis may end a run early; reseed and go on)."""
    round_ = 0
    while target.inputs < n:
        @seed(round_)
        @settings(max_examples=min(5000, n - target.inputs), deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(strategy(target))
        def run(data: bytes) -> None:
            target.check(data)

        try:
            run()
        except Exception:  # noqa: BLE001 (the finding is recorded in target.findings; go on)
            pass
        round_ += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--total", type=int, default=102_000, help="inputs over all loaders")
    parser.add_argument("--only", nargs="*", default=None, help="fuzz only these loaders (names in the JSON)")
    parser.add_argument("--out", type=Path, default=RESULTS / "fuzz_loaders.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.getLogger("nibabel").setLevel(logging.CRITICAL)  # "sizeof_hdr should be 348" x 10 000
    results = []
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        bundle, _, _ = tiny_liver_bundle(Path(tmp) / "b")
        targets = [t for t in make_targets(Path(tmp) / "seeds", bundle) if not args.only or t.name in args.only]
        per = -(-args.total // len(targets))
        for target in targets:
            t0 = time.perf_counter()
            _fuzz(target, per)
            results.append({"loader": target.name, "inputs": target.inputs, "refused_with_edgemed_error": target.refused,
                            "loaded": target.accepted, "findings": sorted(set(target.findings))[:50],
                            "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(results[-1]), file=sys.stderr)
            config = config_from_args(
                args, contract=f"load, or raise an EdgemedError within {TIME_LIMIT_S} s; anything else is a finding",
                generator="hypothesis (mutations of valid seed files, JSON-aware mutations of a bundle manifest, "
                          "raw random bytes)")
            report = {"total_inputs": sum(r["inputs"] for r in results),
                      "total_findings": sum(len(r["findings"]) for r in results),
                      "seconds": round(time.perf_counter() - t_all, 1), "targets": results}
            write_result(args.out, benchmark="fuzz_loaders", script=__file__, config=config, metrics=report)
    print(f"{report['total_inputs']} inputs, {report['total_findings']} findings; wrote {args.out}")
    return 1 if report["total_findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
