"""One loaded runtime shared by 8 threads for 500 volumes each: no error, outputs equal to a serial run."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edgemed.phantom import PhantomConfig, make_phantom
from edgemed.runtime import OnnxBundle, load

THREADS, PER_THREAD = 8, 500


def test_eight_threads_by_500_volumes_match_serial(phantom_bundle: OnnxBundle) -> None:
    # Distinct volumes on distinct grids, so a buffer shared by mistake between calls shows up.
    volumes = [make_phantom(seed, PhantomConfig(shape=(24 + 2 * seed, 20 + seed, 4 + seed % 3),
                                                spacing_mm=(8.0 + seed % 2, 8.0, 10.0)))[0] for seed in range(8)]
    with load(phantom_bundle.path, backend="ort", threads=1, throughput=True) as seg:
        serial = [seg.segment(v).array for v in volumes]
        assert any(s.any() for s in serial), "the phantom student must segment something for the check to bite"

        def worker(t: int) -> list[int]:
            bad = []
            for i in range(PER_THREAD):
                j = (t + i) % len(volumes)  # every thread walks every volume, in a different phase
                if not np.array_equal(seg.segment(volumes[j]).array, serial[j]):
                    bad.append(j)
            return bad

        with ThreadPoolExecutor(THREADS) as pool:
            mismatches = [m for r in pool.map(worker, range(THREADS)) for m in r]
    assert mismatches == [], f"{len(mismatches)} of {THREADS * PER_THREAD} concurrent results differ from serial"
