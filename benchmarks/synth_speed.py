"""Time ``geolink-edge synth`` at a few sizes and print a table (not run by CI).

    python benchmarks/synth_speed.py                 # 24×4@128, 200×8@256
    python benchmarks/synth_speed.py --quick         # the small setting only

The CPU is shared on most machines: the table also shows the load average at the start and end.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from geolink_edge.data.synthetic import writer

SETTINGS = {
    "demo 24×4@128 + flight 60@256": {
        "locations": 24,
        "views": 4,
        "size": 128,
        "flight_frames": 60,
        "flight_size": 256,
    },
    "200×8@256": {"locations": 200, "views": 8, "size": 256},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the small setting")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for name, options in list(SETTINGS.items())[: 1 if args.quick else None]:
        with tempfile.TemporaryDirectory() as tmp:
            load0 = os.getloadavg()[0]
            start = time.perf_counter()
            writer.main(writer.SynthConfig(**options, workers=args.workers), Path(tmp) / "out")
            wall = time.perf_counter() - start
            files = sum(len(f) for _, _, f in os.walk(tmp))
            rows.append((name, wall, files, load0, os.getloadavg()[0]))
    # no CPU-seconds column: the workers are children of multiprocessing's fork server, not of this
    # process, so os.times() would not count them
    print(f"{'setting':34} {'wall s':>8} {'files':>7} {'load':>11}  (workers={args.workers})")
    for name, wall, files, l0, l1 in rows:
        print(f"{name:34} {wall:8.1f} {files:7d} {l0:5.1f}→{l1:<5.1f}")


if __name__ == "__main__":
    main()
