"""Fine localization per local-feature extractor + matcher and backend, on hard flights; prints a table.

Cases (each built once under ``--work`` and reused):

- ``season``: a synthetic flight whose map was rendered in another season/style than the frames;
- ``low``: a synthetic flight at about 40 m over a coarse (0.5 m/px) map;

  both flown as ``run --camera sim://…`` flies them (the flight's ``camera.yaml`` and attitude, so
  the position votes decide) and started within 60 m of the first position, as a pilot would give it;
- ``oblique15``, ``oblique30``, ``oblique45``: flights 15°, 30° and 45° off nadir at 120, 100 and
  80 m over rolling terrain, every ``--oblique-every``-th frame located **alone** (a fresh locator,
  nothing learned from earlier frames, as ``locate --near`` places one photo: every window within
  60 m of the true position), once with the attitude and height told (``told``) and once with only
  the intrinsics (``free``); the figure is the camera's horizontal position error;
- ``coldstart``: the standard 60-frame synthetic flight (130 m) run paced, as a camera gives it,
  with no start area (``run`` without ``--near``: a global search), a frame budget of
  ``--frame-budget`` s and new map windows read beside the frames, as ``run`` does when paced:
  frames processed and dropped, the longest frame, and the seconds from the first frame to the
  first accepted fix;
- ``campus``: the real campus video (``--campus DIR`` with ``flight.mp4`` and ``map.tif``), every
  ``--video-every``-th frame, started with ``--near``; no ground truth, so the figure is the largest
  jump between consecutive fixes beyond what the drone flies at its median speed.

Columns: fix rate (accepted by the track filter), median / p90 error of the sent estimates
(synthetic), largest excess jump (video), verification time per frame and per verified candidate.

    python benchmarks/matching.py --model encoder.onnx --work /tmp/matching \\
        --campus data/campus-video --near 33.64285,72.99207,250 --frames 40 --video-every 20
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from _results import publish_tables  # a sibling module: tables into RESULTS.md

from geolink_edge.backends import load_embedder
from geolink_edge.runtime import loop
from geolink_edge.runtime.intrinsics import load_intrinsics
from geolink_edge.runtime.locate import LocateConf, Locator
from geolink_edge.runtime.retrieval import open_index
from geolink_edge.runtime.sources import Frame, open_reader
from geolink_edge.runtime.verify import VerifyConf

CAMPUS_FPS = 29.97
START_RADIUS_M = 60.0  # the synthetic flights' start area about their first position


def synth_case(work: Path, name: str, options: dict, model: Path, frames: int) -> tuple[Path, Path]:
    """(flight folder, index) of a synthetic case, made on first use."""
    from geolink_edge.data.synthetic import writer
    from geolink_edge.index.build import BuildConfig
    from geolink_edge.index.build import main as build

    root = work / name
    flight, index = root / "world" / "flight", root / "index"
    if not index.is_dir():
        conf = writer.SynthConfig(locations=2, views=1, size=64, flight_frames=frames, workers=1, **options)
        writer.main(conf, root / "world")
        area = json.loads((flight / "flight.json").read_text())["area"]
        build(
            BuildConfig(tile_m=80.0, workers=1),
            model,
            index,
            ortho=[root / "world" / "areas" / area / "ortho.tif"],
        )
    return flight, index


def campus_index(work: Path, campus: Path, model: Path) -> Path:
    from geolink_edge.index.build import BuildConfig
    from geolink_edge.index.build import main as build

    index = work / "campus" / "index"
    if not index.is_dir():
        conf = BuildConfig(tile_m=150.0, workers=1, nodata=0, min_valid=0.5)
        build(conf, model, index, ortho=[campus / "map.tif"])
    return index


def video_frames(path: Path, every: int, limit: int | None):
    """Every ``every``-th frame of a video as runtime frames, timed by the recording's clock."""
    capture = cv2.VideoCapture(str(path))
    i = 0
    try:
        while limit is None or i < limit * every:
            ok, image = capture.read()
            if not ok:
                break
            if i % every == 0:
                t = i / CAMPUS_FPS
                yield Frame(image, i, t, t, time.monotonic())
            i += 1
    finally:
        capture.release()


def sim_frames(flight: Path, limit: int):
    reader = open_reader(f"sim://{flight}")
    for i in range(limit):
        raw = reader.read()
        if raw is None:
            break
        t = raw.timestamp if raw.timestamp is not None else float(i)
        yield Frame(raw.image, i, t, t, time.monotonic(), raw.truth, raw.telemetry)


def flight_start(flight: Path) -> tuple[float, float, float]:
    """(lat, lon, radius_m) about a synthetic flight's first position."""
    first = (flight / "gt.csv").read_text().splitlines()[1].split(",")
    return float(first[2]), float(first[3]), START_RADIUS_M


def locate_alone(
    flight: Path,
    model: Path,
    index_dir: Path,
    conf: LocateConf,
    every: int,
    told: bool,
    region: tuple[float, float, float] | None = None,
) -> dict:
    """Each ``every``-th frame of a synthetic flight located on its own (see the module's doc);
    ``region`` (x, y, radius_m): search there instead of within 60 m of each frame's truth."""
    embedder = load_embedder(model)
    index = open_index(index_dir, embedder.card, model)
    camera = load_intrinsics(flight / "camera.yaml")
    locator = Locator(index, conf, camera)
    errors, times, located, records = [], [], 0, []
    frames = list(sim_frames(flight, 100000))[::every]
    for frame in frames:
        locator.forget()  # nothing carried over from the previous frame
        truth = index.frame.to_enu(frame.truth.lat, frame.truth.lon)[:2]
        area = region or (float(truth[0]), float(truth[1]), START_RADIUS_M)
        t0 = time.perf_counter()
        descriptor = embedder.embed([frame.image])[0]
        fix = locator.locate(frame.image, descriptor, area, frame.telemetry if told else None, True)
        times.append(time.perf_counter() - t0)
        record = {"frame": frame.index, **fix.to_dict()}
        if fix.ok:
            located += 1
            record["error_m"] = float(np.hypot(fix.x - truth[0], fix.y - truth[1]))
            errors.append(record["error_m"])
        records.append(record)
    return {
        "records": records,
        "frames": len(frames),
        "fix_rate": located / max(len(frames), 1),
        "median_m": float(np.median(errors)) if errors else None,
        "p90_m": float(np.percentile(errors, 90)) if errors else None,
        "max_m": float(np.max(errors)) if errors else None,
        "median_s": float(np.median(times)) if times else None,
        "max_s": float(np.max(times)) if times else None,
    }


def cold_start(flight: Path, model: Path, index_dir: Path, conf: loop.RunConf, work: Path) -> dict:
    """The paced flight from a cold start (see the module's doc)."""
    from geolink_edge.runtime.sinks import read_flight_log

    log = work / "coldstart.jsonl"
    log.unlink(missing_ok=True)
    loop.main(conf, f"sim://{flight}", model, index_dir, log=log, console=False)
    records, _ = read_flight_log(log)
    frames = [r for r in records if "status" in r]
    total = json.loads((flight / "flight.json").read_text())["frames"]
    longest = max(r["latency_ms"]["total"] for r in frames)
    accepted = [r for r in frames if r["status"] == "accepted"]
    first = (
        (accepted[0]["t_done"] - frames[0]["t_done"] + frames[0]["latency_ms"]["total"] / 1e3)
        if accepted
        else None
    )
    errors = [r["error_m"] for r in accepted if r.get("error_m") is not None]
    return {
        "frames": total,
        "seen": len(frames),
        "accepted": len(accepted),
        "longest_s": longest / 1e3,
        "first_fix_s": first,
        "median_m": float(np.median(errors)) if errors else None,
        "max_m": float(np.max(errors)) if errors else None,
    }


def largest_excess_jump(records: list[dict]) -> tuple[float | None, float | None]:
    """(largest jump between consecutive raw fixes, that jump minus the median speed × its time)."""
    fixes = [(r["t_sensor"], r["fix"]["x"], r["fix"]["y"]) for r in records if r["fix"]["ok"]]
    if len(fixes) < 2:
        return None, None
    t, x, y = (np.array(v) for v in zip(*fixes, strict=True))
    dt, jump = np.diff(t), np.hypot(np.diff(x), np.diff(y))
    speed = float(np.median(jump / np.maximum(dt, 1e-6)))
    return float(jump.max()), float(np.max(jump - speed * dt))


def run_case(frames, model: Path, index_dir: Path, conf: loop.RunConf, intrinsics=None) -> dict:
    embedder = load_embedder(model)
    index = open_index(index_dir, embedder.card, model)
    pipeline = loop.Pipeline(embedder, index, conf, intrinsics)
    records = [pipeline.process(frame) for frame in frames]
    verify = [r["latency_ms"]["verify"] for r in records]
    verified = sum(r["fix"]["verified"] for r in records)
    errors = [r["error_m"] for r in records if r.get("error_m") is not None]
    jump, excess = largest_excess_jump(records)
    return {
        "records": records,
        "frames": len(records),
        "fix_rate": sum(r["status"] == "accepted" for r in records) / max(len(records), 1),
        "median_m": float(np.median(errors)) if errors else None,
        "p90_m": float(np.percentile(errors, 90)) if errors else None,
        "jump_m": jump,
        "excess_m": excess,
        "verify_ms": float(np.median(verify)) if verify else None,
        "per_candidate_ms": sum(verify) / verified if verified else None,
    }


def draw_path(index_dir: Path, records: list[dict], out: Path, gsd_m: float = 1.0) -> None:
    """The raw fixes (dots) and the accepted track (line) over the bundle's map."""
    from geolink_edge.index.search import TileIndex

    index = TileIndex.load(index_dir)
    xy = np.array([[r["fix"]["x"], r["fix"]["y"]] for r in records if r["fix"]["ok"]]).reshape(-1, 2)
    xy = xy if len(xy) else index.centers_xy
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
    half = max(x1 - x0, y1 - y0) / 2 + 80.0
    window = index.map_window((x0 + x1) / 2, (y0 + y1) / 2, half, gsd_m)
    # a grey map: the coloured path stands out, and the picture compresses to half
    image = cv2.cvtColor(cv2.cvtColor(window.image, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    to_pixel = np.linalg.inv(np.vstack([window.pixel_to_xy, [0, 0, 1]]))[:2]

    def pixel(x: float, y: float) -> tuple[int, int]:
        u, v = to_pixel @ [x, y, 1.0]
        return int(round(u)), int(round(v))

    track = [pixel(r["estimate"]["x"], r["estimate"]["y"]) for r in records if "estimate" in r]
    for a, b in zip(track, track[1:], strict=False):
        cv2.line(image, a, b, (0, 255, 255), 1, cv2.LINE_AA)
    for r in records:
        if r["fix"]["ok"]:
            colour = (0, 200, 0) if r["status"] == "accepted" else (0, 0, 255)
            cv2.circle(image, pixel(r["fix"]["x"], r["fix"]["y"]), 2, colour, -1, cv2.LINE_AA)
    if track:
        cv2.circle(image, track[0], 9, (255, 255, 255), 2, cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), image)


def fmt(value, spec: str) -> str:
    return (
        "—"
        if value is None or (isinstance(value, float) and not math.isfinite(value))
        else format(value, spec)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, required=True, help="encoder (.onnx) the indexes are built with"
    )
    parser.add_argument("--work", type=Path, required=True, help="folder for the worlds and indexes (reused)")
    parser.add_argument("--features", nargs="+", default=["sift"], help="extractor[:matcher] names or files")
    parser.add_argument("--cases", nargs="+", default=["season", "low", "campus"])
    parser.add_argument("--frames", type=int, default=40, help="frames of each synthetic flight")
    parser.add_argument("--campus", type=Path, help="folder with flight.mp4 and map.tif")
    parser.add_argument("--near", help="LAT,LON,RADIUS_M start area of the campus video")
    parser.add_argument("--video-every", type=int, default=20)
    parser.add_argument("--video-frames", type=int, default=None, help="sampled video frames (default all)")
    parser.add_argument("--paths", type=Path, help="write the campus path per matcher as PNGs here")
    parser.add_argument("--oblique-frames", type=int, default=80, help="frames of each oblique flight")
    parser.add_argument("--oblique-every", type=int, default=4, help="locate every n-th oblique frame")
    parser.add_argument("--records", type=Path, help="write each oblique case's fixes here (JSON)")
    parser.add_argument("--frame-budget", type=float, default=0.8, help="coldstart: seconds per frame")
    parser.add_argument(
        "--rotations",
        type=int,
        help="1, 2 or 4 turns tried on a frame of unknown heading (default: by features)",
    )
    args = parser.parse_args()
    publish_tables("Matching at one ground resolution")
    from geolink_edge.commands.run import parse_near

    synth = {
        "season": {"map_season": "winter"},
        "low": {"flight_altitude": 40.0, "map_gsd": 0.5},
        "oblique15": {"flight_altitude": 120.0, "flight_pitch": 75.0},
        "oblique30": {"flight_altitude": 100.0, "flight_pitch": 60.0},
        "oblique45": {"flight_altitude": 80.0, "flight_pitch": 45.0, "hfov": 40.0},
        "coldstart": {},
    }
    rows, alone, cold = [], [], []
    for case in args.cases:
        for spec in args.features:
            features, _, matcher = spec.partition(":")
            turns = {} if args.rotations is None else {"rotations": args.rotations}
            verify = VerifyConf(features=features, matcher=matcher or None, **turns)
            locate = LocateConf(verify=verify)
            conf = loop.RunConf(locate=locate, realtime=False)
            if case == "coldstart":
                flight, index = synth_case(args.work, case, synth[case], args.model, 60)
                budgeted = replace(locate, budget_s=args.frame_budget, background_windows=True)
                paced = loop.RunConf(locate=budgeted)
                cold.append((spec, cold_start(flight, args.model, index, paced, args.work)))
                continue
            if case.startswith("oblique"):
                flight, index = synth_case(args.work, case, synth[case], args.model, args.oblique_frames)
                for told in (True, False):
                    result = locate_alone(flight, args.model, index, locate, args.oblique_every, told)
                    alone.append((case, spec, "told" if told else "free", result))
                    if args.records:
                        name = f"{case}_{Path(spec).stem}_{'told' if told else 'free'}.json"
                        args.records.mkdir(parents=True, exist_ok=True)
                        (args.records / name).write_text(json.dumps(result["records"], indent=1))
                    print(f"{case} {spec} {alone[-1][2]}: located {result['fix_rate']:.3f}", flush=True)
                continue
            if case == "campus":
                index = campus_index(args.work, args.campus, args.model)
                frames = video_frames(args.campus / "flight.mp4", args.video_every, args.video_frames)
                result = run_case(frames, args.model, index, replace(conf, near=parse_near(args.near)))
                if args.paths:
                    name = "_".join(Path(part).stem for part in spec.split(":"))  # names or files
                    draw_path(index, result["records"], args.paths / f"campus_path_{name}.png")
            else:
                flight, index = synth_case(args.work, case, synth[case], args.model, args.frames)
                camera = load_intrinsics(flight / "camera.yaml")
                conf = replace(conf, near=flight_start(flight))
                result = run_case(sim_frames(flight, args.frames), args.model, index, conf, camera)
            rows.append((case, spec, result))
            print(f"{case} {spec}: fix rate {result['fix_rate']:.3f}", flush=True)
    if alone:
        print()
        print("| case | features | attitude | frames | located | median / p90 / max m | s median / max |")
        print("|---|---|---|---:|---:|---|---|")
        for case, spec, attitude, r in alone:
            print(
                f"| {case} | {spec} | {attitude} | {r['frames']} | {100 * r['fix_rate']:.1f} % "
                f"| {fmt(r['median_m'], '.2f')} / {fmt(r['p90_m'], '.2f')} / {fmt(r['max_m'], '.2f')} "
                f"| {fmt(r['median_s'], '.1f')} / {fmt(r['max_s'], '.1f')} |"
            )
    if cold:
        print()
        print("| coldstart | frames seen / of | accepted | longest frame s | first fix s | median / max m |")
        print("|---|---:|---:|---:|---:|---|")
        for spec, r in cold:
            print(
                f"| {spec} | {r['seen']} / {r['frames']} | {r['accepted']} | {r['longest_s']:.2f} "
                f"| {fmt(r['first_fix_s'], '.1f')} | {fmt(r['median_m'], '.2f')} / {fmt(r['max_m'], '.2f')} |"
            )
    if not rows:
        return
    print()
    print(
        "| case | features:matcher | frames | fix rate | median / p90 m | largest jump (excess) m "
        "| verify ms/frame | ms/candidate |"
    )
    print("|---|---|---:|---:|---|---|---:|---:|")
    for case, spec, r in rows:
        print(
            f"| {case} | {spec} | {r['frames']} | {100 * r['fix_rate']:.1f} % "
            f"| {fmt(r['median_m'], '.2f')} / {fmt(r['p90_m'], '.2f')} "
            f"| {fmt(r['jump_m'], '.1f')} ({fmt(r['excess_m'], '.1f')}) "
            f"| {fmt(r['verify_ms'], '.0f')} | {fmt(r['per_candidate_ms'], '.0f')} |"
        )


if __name__ == "__main__":
    main()
