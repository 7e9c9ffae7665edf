"""Area correlation on the synthetic flights: its acceptance calibrated, its representations compared.

Cases (built once under ``--work`` by ``matching.synth_case``, each from its own seed):

- ``low``: 40 m over a 0.5 m/px map; ``season``: the map in winter, the frames in summer;
- ``cal-low``, ``cal-season``: the same kinds of world from another seed, for calibration only.

``calibrate`` searches each frame (heading and height told, as the flight's telemetry gives them)
over the whole map twice: as it is (the true peak, or a look-alike that won) and with the ground the
frame sees blanked (every peak left is a look-alike). It prints the statistics of the best peak per
field and case, as JSON lines when ``--out`` is given; docs/design/correlation.md reads them.

    python benchmarks/correlation.py calibrate --model encoder.onnx --work /tmp/matching \\
        --cases cal-low cal-season --fields orientation channels intensity --every 2
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from matching import synth_case

from geolink_edge.index.search import TileIndex
from geolink_edge.runtime.correlate import (
    CorrelateConf,
    Correlator,
    correlation_gsd,
    ground_templates,
    map_area,
)
from geolink_edge.runtime.intrinsics import load_intrinsics
from geolink_edge.runtime.sources import open_reader

LOW = {"flight_altitude": 40.0, "map_gsd": 0.5}
SEASON = {"map_season": "winter"}
CASES = {"low": LOW, "season": SEASON, "cal-low": {**LOW, "seed": 1}, "cal-season": {**SEASON, "seed": 1}}
TRUE_M = 3.0  # a best peak this close to the truth is the true one; any other is a look-alike


def whole_map(index: TileIndex, gsd_m: float):
    """The index's whole map as one window at ``gsd_m``."""
    low, high = index.centers_xy.min(axis=0), index.centers_xy.max(axis=0)
    centre = (low + high) / 2
    half = float(np.max(high - low)) / 2 + float(np.max([t.tile_m for t in index.tiles])) / 2
    return index.map_window(centre[0], centre[1], half, gsd_m)


def blanked(window, xy: np.ndarray, radius_m: float):
    """``window`` with the ground within ``radius_m`` of ``xy`` marked as having no imagery."""
    height, width = window.valid.shape
    u, v = np.meshgrid(np.arange(width), np.arange(height))
    ground = np.stack([u, v, np.ones_like(u)], -1) @ window.pixel_to_xy.T
    valid = window.valid & (np.hypot(ground[..., 0] - xy[0], ground[..., 1] - xy[1]) > radius_m)
    return replace(window, valid=valid)


def frames(flight: Path, every: int, limit: int):
    reader = open_reader(f"sim://{flight}")
    for i in range(limit):
        raw = reader.read()
        if raw is None:
            break
        if i % every == 0:
            yield i, raw


def calibrate_case(work: Path, case: str, model: Path, fields: list[str], every: int, limit: int, out):
    flight, index_dir = synth_case(work, case, CASES[case], model, limit)
    index = TileIndex.load(index_dir)
    camera = load_intrinsics(flight / "camera.yaml")
    maps: dict = {}
    for i, raw in frames(flight, every, limit):
        intrinsics = camera.for_size(raw.image.shape[1], raw.image.shape[0])
        east, north, _ = index.frame.to_enu(raw.truth.lat, raw.truth.lon)
        truth = np.array([east, north])
        for kind in fields:
            conf = CorrelateConf(field=kind, min_score=0.0, max_ratio=1.0)  # record, refuse nothing
            gsd = correlation_gsd(index.map_gsd_m, intrinsics, raw.telemetry, conf)
            if (kind, gsd) not in maps:
                maps[kind, gsd] = whole_map(index, gsd)
            window = maps[kind, gsd]
            make = ground_templates(raw.image, intrinsics, raw.telemetry, gsd, conf)
            footprint = float(np.max(make(0.0, max(conf.scales)).mask.shape)) * gsd / 2 * np.sqrt(2)
            for search, area in (
                ("map", window),
                ("elsewhere", blanked(window, truth, footprint + conf.distinct_m)),
            ):
                t0 = time.perf_counter()
                result = Correlator(conf).search(
                    make, [map_area(area.image, area.valid, area.pixel_to_xy, conf)], gsd
                )
                error = float(np.hypot(*(result.xy - truth))) if result.xy is not None else None
                row = {
                    "case": case,
                    "field": kind,
                    "frame": i,
                    "search": search,
                    "peak": "true" if error is not None and error <= TRUE_M else "look-alike",
                    "error_m": error,
                    "score": result.score,
                    "ratio": result.ratio,
                    "psr": result.psr,
                    "yaw_deg": result.yaw_deg,
                    "scale": result.scale,
                    "texture": result.texture,
                    "ms": (time.perf_counter() - t0) * 1e3,
                }
                if out is not None:
                    print(json.dumps(row), file=out, flush=True)
                yield row


def summary(rows: list[dict]) -> None:
    """Per case and field: the true and look-alike peaks' statistics (min / median / max)."""
    print("| case | field | peak | n | score min/med/max | ratio min/med/max | PSR min/med/max | ms median |")
    print("|---|---|---|---:|---|---|---|---:|")
    keys = sorted({(r["case"], r["field"], r["peak"]) for r in rows})
    for case, kind, peak in keys:
        chosen = [r for r in rows if (r["case"], r["field"], r["peak"]) == (case, kind, peak)]

        def spread(name: str, chosen: list[dict] = chosen) -> str:
            values = np.array([r[name] for r in chosen])
            return f"{values.min():.2f} / {np.median(values):.2f} / {values.max():.2f}"

        ms = np.median([r["ms"] for r in chosen])
        print(
            f"| {case} | {kind} | {peak} | {len(chosen)} | {spread('score')} | {spread('ratio')} "
            f"| {spread('psr')} | {ms:.0f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["calibrate"])
    parser.add_argument(
        "--model", type=Path, required=True, help="encoder (.onnx) the indexes are built with"
    )
    parser.add_argument("--work", type=Path, required=True, help="folder for the worlds and indexes (reused)")
    parser.add_argument("--cases", nargs="+", default=["cal-low", "cal-season"], choices=sorted(CASES))
    parser.add_argument("--fields", nargs="+", default=["orientation", "channels"])
    parser.add_argument("--frames", type=int, default=40, help="frames of each synthetic flight")
    parser.add_argument("--every", type=int, default=1, help="use every n-th frame")
    parser.add_argument("--out", type=Path, help="also write the rows here as JSON lines")
    args = parser.parse_args()
    rows = []
    out = open(args.out, "w") if args.out else None  # noqa: SIM115 - closed below, rows flushed as made
    try:
        for case in args.cases:
            rows += calibrate_case(args.work, case, args.model, args.fields, args.every, args.frames, out)
    finally:
        if out is not None:
            out.close()
    summary(rows)


if __name__ == "__main__":
    main()
