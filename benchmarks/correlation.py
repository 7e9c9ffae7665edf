"""Area correlation on the synthetic flights: its acceptance calibrated, frames located alone.

Cases (built once under ``--work`` by ``matching.synth_case``, each from its own seed):

- ``low``: 40 m over a 0.5 m/px map; ``season``: the map in winter, the frames in summer;
- ``cal-low``, ``cal-season``: the same kinds of world from another seed, for calibration only.

``calibrate`` searches each frame (heading and height told, as the flight's telemetry gives them)
over the whole map twice: as it is (the true peak, or a look-alike that won) and with the ground the
frame sees blanked (every peak left is a look-alike). It prints the statistics of the best peak per
field and case, as JSON lines when ``--out`` is given; docs/design/correlation.md reads them.

``alone`` locates each frame on its own through the locator (``matching.locate_alone``: a fresh
locator per frame, heading, pitch and height told) with each ``--verifiers`` mode, over two search
areas: ``near`` (every window within 60 m of the truth, as ``locate --near`` places one photo) and
``map`` (the whole map: no prior at all beyond it).

    python benchmarks/correlation.py calibrate --model encoder.onnx --work WORK \\
        --cases cal-low cal-season --fields orientation channels intensity --every 2
    python benchmarks/correlation.py alone --model encoder.onnx --work WORK \\
        --cases low season --verifiers features correlation auto --areas near map
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from matching import fmt, locate_alone, synth_case

from geolink_edge.index.search import TileIndex
from geolink_edge.runtime.candidates import VerifierMode
from geolink_edge.runtime.correlate import (
    CorrelateConf,
    Correlator,
    correlation_gsd,
    ground_templates,
    map_area,
)
from geolink_edge.runtime.intrinsics import load_intrinsics
from geolink_edge.runtime.locate import LocateConf
from geolink_edge.runtime.sources import open_reader

LOW = {"flight_altitude": 40.0, "map_gsd": 0.5}
SEASON = {"map_season": "winter"}
CASES = {"low": LOW, "season": SEASON, "cal-low": {**LOW, "seed": 1}, "cal-season": {**SEASON, "seed": 1}}
TRUE_M = 3.0  # a best peak this close to the truth is the true one; any other is a look-alike


def map_square(index: TileIndex) -> tuple[float, float, float]:
    """(x, y, half_size_m) of the square holding the index's whole map."""
    low, high = index.centers_xy.min(axis=0), index.centers_xy.max(axis=0)
    centre = (low + high) / 2
    half = float(np.max(high - low)) / 2 + float(np.max([t.tile_m for t in index.tiles])) / 2
    return float(centre[0]), float(centre[1]), half


def whole_map(index: TileIndex, gsd_m: float):
    """The index's whole map as one window at ``gsd_m``."""
    return index.map_window(*map_square(index), gsd_m)


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


def alone(work: Path, case: str, model: Path, verifier: str, area: str, frames: int, records: Path | None):
    flight, index_dir = synth_case(work, case, CASES[case], model, frames)
    region = None
    if area == "map":
        # the points below the camera lie in the map's square: a circle through its corners holds them
        x, y, half = map_square(TileIndex.load(index_dir))
        region = (x, y, half)
    conf = LocateConf(verifier=VerifierMode(verifier))
    result = locate_alone(flight, model, index_dir, conf, 1, True, region)
    if records:
        records.mkdir(parents=True, exist_ok=True)
        (records / f"{case}_{verifier}_{area}.json").write_text(json.dumps(result["records"], indent=1))
    errors = [r["error_m"] for r in result["records"] if "error_m" in r]
    result["over_10m"] = sum(e > 10.0 for e in errors)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["calibrate", "alone"])
    parser.add_argument(
        "--model", type=Path, required=True, help="encoder (.onnx) the indexes are built with"
    )
    parser.add_argument("--work", type=Path, required=True, help="folder for the worlds and indexes (reused)")
    parser.add_argument("--cases", nargs="+", default=["cal-low", "cal-season"], choices=sorted(CASES))
    parser.add_argument("--fields", nargs="+", default=["orientation", "channels"])
    parser.add_argument("--frames", type=int, default=40, help="frames of each synthetic flight")
    parser.add_argument("--every", type=int, default=1, help="use every n-th frame")
    parser.add_argument("--out", type=Path, help="also write the rows here as JSON lines")
    parser.add_argument(
        "--verifiers", nargs="+", default=["correlation"], choices=[m.value for m in VerifierMode]
    )
    parser.add_argument("--areas", nargs="+", default=["near", "map"], choices=["near", "map"])
    parser.add_argument("--records", type=Path, help="alone: write each run's fixes here (JSON)")
    args = parser.parse_args()
    if args.what == "alone":
        print(
            "| case | verifier | area | frames | located | median / p90 / max m | > 10 m | s median / max |"
        )
        print("|---|---|---|---:|---:|---|---:|---|")
        for case in args.cases:
            for verifier in args.verifiers:
                for area in args.areas:
                    r = alone(args.work, case, args.model, verifier, area, args.frames, args.records)
                    errors = (
                        f"{fmt(r['median_m'], '.2f')} / {fmt(r['p90_m'], '.2f')} / {fmt(r['max_m'], '.2f')}"
                    )
                    print(
                        f"| {case} | {verifier} | {area} | {r['frames']} | {100 * r['fix_rate']:.1f} % "
                        f"| {errors} | {r['over_10m']} "
                        f"| {fmt(r['median_s'], '.2f')} / {fmt(r['max_s'], '.2f')} |",
                        flush=True,
                    )
        return
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
