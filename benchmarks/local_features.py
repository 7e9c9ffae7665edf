"""Local features and matchers on one 640-px pair: extraction and matching time, inliers, accuracy.

The pair is a real video frame and the same frame seen through a known homography (turned 15°,
scaled 0.9, darker), so the error of the recovered homography is known. A matcher's cost per
candidate tile is ``match`` (tile features are cached by the verifier); ``frame`` is paid once per
frame. Exported files (``geolink-edge export-matching PAIR --out DIR``) run through ONNX Runtime.

    python benchmarks/local_features.py --video flight.mp4 --exported xfeat_dir disk_dir
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
from _results import publish_tables  # a sibling module: tables into RESULTS.md

from geolink_edge.runtime.verify import Verifier, VerifyConf

BY_NAME = [("sift", None), ("orb", None), ("xfeat", None), ("xfeat", "nn"), ("disk", None), ("aliked", None)]


def pair(video: Path, index: int, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frame, tile, homography frame → tile), both at most ``side`` px."""
    capture = cv2.VideoCapture(str(video))
    capture.set(cv2.CAP_PROP_POS_FRAMES, index)
    ok, frame = capture.read()
    if not ok:
        raise SystemExit(f"{video}: cannot read frame {index}")
    scale = side / max(frame.shape[:2])
    frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    h, w = frame.shape[:2]
    turn = np.vstack([cv2.getRotationMatrix2D((w / 2, h / 2), 15.0, 0.9), [0, 0, 1]])
    tile = cv2.convertScaleAbs(cv2.warpPerspective(frame, turn, (w, h)), alpha=0.8, beta=10)
    return frame, tile, turn


def timed(fn, repeats: int) -> tuple[object, float, float]:
    """(result, median wall ms, median CPU ms of this process: all its threads, unaffected by waiting)."""
    result, wall, cpu = None, [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall.append((time.perf_counter() - start) * 1e3)
        cpu.append((time.process_time() - start_cpu) * 1e3)
    return result, statistics.median(wall), statistics.median(cpu)


def row(features: str, matcher: str | None, frame, tile, truth, args) -> list[str]:
    conf = VerifyConf(features=features, matcher=matcher, max_features=args.max_features, rotations=1)
    verifier = Verifier(conf)  # one turn: the pair is 15° apart
    backend = getattr(getattr(verifier.matcher, "model", None), "name", "opencv")
    verifier.features(frame)  # warm-up: lazy initialisation, first-run allocations
    frame_features, frame_ms, _ = timed(lambda: verifier.features(frame), args.repeats)
    tile_features = verifier.tile_features(0, lambda _: tile)
    (query, _), match_ms, match_cpu = timed(
        lambda: verifier.matcher.match(frame_features, tile_features), args.repeats
    )
    result = verifier.verify(0, frame_features, tile_features)
    error = "-"
    if result.ok:
        corners = np.array(
            [[0, 0], [frame.shape[1], 0], [frame.shape[1], frame.shape[0]], [0, frame.shape[0]]], float
        )
        got = cv2.perspectiveTransform(corners[None], result.homography)[0]
        want = cv2.perspectiveTransform(corners[None], truth)[0]
        error = f"{np.linalg.norm(got - want, axis=1).max():.1f}"
    name = lambda value: Path(value).name if value else "(natural)"  # noqa: E731
    return [
        name(features), name(matcher or verifier.matcher.name), backend, str(len(frame_features.xy)),
        str(len(tile_features.xy)), f"{frame_ms:.0f}", f"{match_ms:.0f}", f"{match_cpu:.0f}", str(len(query)),
        str(result.inliers if result.ok else 0), error,
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, required=True)
    parser.add_argument("--frame", type=int, default=300)
    parser.add_argument("--side", type=int, default=640)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--exported", type=Path, nargs="*", default=[], help="export-matching folders")
    parser.add_argument("--only-exported", action="store_true")
    parser.add_argument("--max-features", type=int, default=None, help="default: each extractor's own")
    args = parser.parse_args()
    publish_tables("Local features and matchers on one real pair")
    frame, tile, truth = pair(args.video, args.frame, args.side)
    setups = [] if args.only_exported else list(BY_NAME)
    for folder in args.exported:
        extractor = next(p for p in sorted(folder.glob("*.onnx")) if "-" not in p.stem)
        setups.append((str(extractor), str(next(folder.glob(f"{extractor.stem}-*.onnx")))))
    header = ["features", "matcher", "backend", "kp frame", "kp tile", "frame ms", "match ms/cand",
              "match CPU ms", "matches", "inliers", "corner err px"]  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for features, matcher in setups:
        print("| " + " | ".join(row(features, matcher, frame, tile, truth, args)) + " |", flush=True)


if __name__ == "__main__":
    main()
