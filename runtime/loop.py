"""The run stage: source → embed → locate → filter → sinks, one record per frame.

Capture runs on its own thread and keeps only the newest frame, MAVLink heartbeats and listens
on its own threads, so a slow stage makes the loop skip stale frames instead of falling behind.
Every record carries the latency of each stage.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from geolink_edge.errors import GeolinkError
from geolink_edge.geo import haversine_m
from geolink_edge.runtime.filter import FilterConf, TrackFilter
from geolink_edge.runtime.intrinsics import Intrinsics, load_intrinsics
from geolink_edge.runtime.locate import LocateConf, Locator, near_region, open_index
from geolink_edge.runtime.mavlink import Estimate
from geolink_edge.runtime.sinks import ConsoleSink, JsonlSink, Summary, clean
from geolink_edge.runtime.sources import Capture, Frame, SimReader, Telemetry, open_reader


@dataclass(frozen=True)
class RunConf:
    locate: LocateConf = field(default_factory=LocateConf)
    filter: FilterConf = field(default_factory=FilterConf)
    search_sigmas: float = 3.0  # radius of the near search around the prediction, in sigmas
    search_floor_m: float | None = None  # least radius of the near search (default: one tile)
    realtime: bool = True  # pace recordings at their frame rate and drop stale frames, like a camera
    max_frames: int | None = None
    altitude: float | None = None  # fixed height above ground, when no autopilot reports it
    sim_telemetry: bool = True  # a sim flight supplies the attitude an autopilot would report
    width: int = 1280
    height: int = 720
    fps: float = 30.0
    threads: int = 0  # ONNX Runtime intra-op threads (0: its default)
    frame_timeout_s: float = 10.0  # give up when a source delivers nothing for this long
    near: tuple[float, float, float] | None = None  # (lat, lon, radius_m) known start area


def resolve_intrinsics(path: str | Path | None, reader) -> Intrinsics | None:
    """``--intrinsics``, or the camera file that comes with a sim flight."""
    if path is not None:
        return load_intrinsics(path)
    if isinstance(reader, SimReader) and reader.camera_yaml.is_file():
        return load_intrinsics(reader.camera_yaml)
    return None


class Pipeline:
    """Embed, locate and filter one frame at a time; turns each frame into a log record."""

    def __init__(self, embedder, index, conf: RunConf, intrinsics: Intrinsics | None = None, mavlink=None):
        self.embedder = embedder
        self.index = index
        self.conf = conf
        self.locator = Locator(index, conf.locate, intrinsics)
        self.filter = TrackFilter(conf.filter)
        self.mavlink = mavlink
        # the tile under the drone has its centre within one tile size of it; a map window around the
        # prediction already has the frame's footprint as margin
        tile_m = (getattr(index, "manifest", {}).get("tiling") or {}).get("tile_m") or 100.0
        floor = conf.locate.window_floor_m if self.locator.windows is not None else float(tile_m)
        self.search_floor_m = conf.search_floor_m or floor
        self.start_region = near_region(index, conf.near) if conf.near is not None else None
        self.last_fix: tuple[float, float, float] | None = None  # (t, x, y) of the latest fix

    def telemetry(self, frame: Frame) -> Telemetry | None:
        source = self.mavlink.telemetry() if self.mavlink is not None else None
        if source is None and self.conf.sim_telemetry:
            source = frame.telemetry
        if self.conf.altitude is not None:
            base = source or Telemetry()
            source = Telemetry(base.yaw, base.pitch, base.roll, self.conf.altitude)
        return source

    def process(self, frame: Frame) -> dict:
        latency: dict[str, float] = {"age": (time.monotonic() - frame.t_mono) * 1e3}
        t0 = time.perf_counter()
        descriptor = self.embedder.embed([frame.image])[0]
        t1 = time.perf_counter()
        latency["embed"] = (t1 - t0) * 1e3
        telemetry = self.telemetry(frame)
        region = self.filter.search_region(frame.t_sensor, self.conf.search_sigmas, self.search_floor_m)
        # until the first track, a known start area is searched candidate by candidate (around the
        # last fix while a second one is awaited)
        exhaustive = region is None and self.start_region is not None and self.filter.resets == 0
        if exhaustive:
            region = self.start_region
            if self.last_fix is not None:
                t, x, y = self.last_fix
                reach = self.conf.filter.max_speed * abs(frame.t_sensor - t) + self.search_floor_m
                region = (x, y, reach) if reach < region[2] else region
        fix = self.locator.locate(frame.image, descriptor, region, telemetry, exhaustive)
        t2 = time.perf_counter()
        for stage in ("search", "verify", "pose"):
            latency[stage] = fix.timing_ms.get(f"{stage}_ms", 0.0)
        if fix.ok:
            self.last_fix = (frame.t_sensor, fix.x, fix.y)
            update = self.filter.update(frame.t_sensor, np.array([fix.x, fix.y]), np.asarray(fix.cov))
        else:
            update = self.filter.miss(frame.t_sensor)
        latency["filter"] = (time.perf_counter() - t2) * 1e3
        record = {
            "frame": frame.index,
            "t_capture": frame.t_capture,
            "t_sensor": frame.t_sensor,
            "status": update.status,
            "mahalanobis2": update.mahalanobis2,
            "fix": {k: v for k, v in fix.to_dict().items() if k != "timing_ms"},
            "telemetry": telemetry.__dict__ if telemetry is not None else None,
        }
        estimate = self._estimate(frame, fix, update.status, telemetry)
        if estimate is not None:
            record["estimate"] = {
                "x": estimate.east,
                "y": estimate.north,
                "lat": estimate.lat,
                "lon": estimate.lon,
                "alt": estimate.alt,
                "heading": estimate.heading,
                "v_east": estimate.v_east,
                "v_north": estimate.v_north,
                "cov": estimate.cov_en,
            }
            t3 = time.perf_counter()
            record["sent"] = self.mavlink.send(estimate) if self.mavlink is not None else False
            latency["mavlink"] = (time.perf_counter() - t3) * 1e3
        self._errors(record, frame, fix, estimate)
        latency["total"] = (time.perf_counter() - t0) * 1e3
        record["latency_ms"] = latency
        record["t_done"] = time.time()
        return record

    def _estimate(self, frame: Frame, fix, status: str, telemetry: Telemetry | None) -> Estimate | None:
        """The filtered state after an accepted fix — the only thing the autopilot is told."""
        if status != "accepted":
            return None
        east, north = self.filter.position
        v_east, v_north = self.filter.velocity
        lat = lon = float("nan")
        if self.index.frame is not None:
            lat_a, lon_a, _ = self.index.frame.to_geodetic(east, north)
            lat, lon = float(lat_a), float(lon_a)
        heading = fix.heading if fix.heading is not None else (telemetry.yaw if telemetry else None)
        cov = self.filter.covariance
        return Estimate(
            t_unix=frame.t_capture,
            lat=lat,
            lon=lon,
            east=float(east),
            north=float(north),
            v_east=float(v_east),
            v_north=float(v_north),
            cov_en=cov[:2, :2],
            cov_v_en=cov[2:, 2:],
            heading=heading,
            alt=fix.alt,
            quality=min(100, fix.inliers),
            reset_counter=self.filter.resets,
        )

    def _errors(self, record: dict, frame: Frame, fix, estimate: Estimate | None) -> None:
        """Ground-truth distances (sim sources) of the sent estimate and of the raw fix."""
        if frame.truth is None or self.index.frame is None:
            return
        truth = frame.truth
        if estimate is not None:
            record["error_m"] = float(haversine_m(truth.lat, truth.lon, estimate.lat, estimate.lon))
        if fix.ok:
            record["fix_error_m"] = float(haversine_m(truth.lat, truth.lon, fix.lat, fix.lon))
        record["truth"] = {"lat": truth.lat, "lon": truth.lon, "alt": truth.alt}


def run_frames(pipeline: Pipeline, capture: Capture, conf: RunConf, on_record) -> Summary:
    """Drive the pipeline until the source ends or ``max_frames``; ``on_record`` gets every record."""
    summary = Summary()
    while conf.max_frames is None or summary.frames < conf.max_frames:
        t_wait = time.perf_counter()
        frame = capture.get(timeout=conf.frame_timeout_s)
        if frame is None:
            if capture.ended:
                break
            raise GeolinkError(
                f"no frame for {conf.frame_timeout_s:.0f} s (last error: {capture.last_error or 'none'})"
            )
        wait_ms = (time.perf_counter() - t_wait) * 1e3
        record = pipeline.process(frame)
        record["latency_ms"]["wait"] = wait_ms
        summary.add(record)
        on_record(record, summary)
    return summary


def source_counters(capture: Capture) -> dict:
    return {
        "corrupt_frames": capture.corrupt,
        "dropped_frames": capture.dropped,
        "reconnects": capture.reconnects,
    }


def main(
    conf: RunConf,
    camera: str,
    model: str | Path,
    index_dir: str | Path,
    intrinsics: str | Path | None = None,
    mavlink: str | None = None,
    mavlink_msg: str = "gps_input",
    log: str | Path | None = None,
    console: bool = True,
) -> dict:
    """Run the onboard localization; returns the summary (also the last line of ``log``)."""
    from geolink_edge.backends import load_embedder

    reader = open_reader(camera, conf.width, conf.height, conf.fps)
    options = {"threads": conf.threads} if conf.threads and str(model).endswith(".onnx") else {}
    embedder = load_embedder(model, **options)
    index = open_index(index_dir, embedder.card, model)
    camera_model = resolve_intrinsics(intrinsics, reader)
    link = None
    if mavlink:
        from geolink_edge.runtime.mavlink import MavlinkSink

        link = MavlinkSink(mavlink, mavlink_msg)
    jsonl = JsonlSink(log) if log else None
    view = ConsoleSink(enabled=console)
    pipeline = Pipeline(embedder, index, conf, camera_model, link)
    # paced replays drop stale frames like a camera; unpaced ones hand over every frame
    capture = Capture(reader, realtime=conf.realtime, drop=True if conf.realtime else None)

    def on_record(record: dict, summary: Summary) -> None:
        if jsonl is not None:
            jsonl.write(record)
        view.update(record, summary.fps)

    summary_dict: dict = {}
    try:
        with capture:
            summary = run_frames(pipeline, capture, conf, on_record)
        extra = {
            **source_counters(capture),
            "model": embedder.name,
            "camera": camera,
            "intrinsics": camera_model is not None,
        }
        if link is not None:
            extra.update(mavlink_sent=link.sent, mavlink_refused=link.refused)
        summary_dict = summary.result(**extra)
    finally:
        view.close()
        if link is not None:
            link.close()
        if jsonl is not None:
            jsonl.close(summary_dict or None)
    return summary_dict


def rss_bytes() -> int:
    """Resident memory of this process now (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def bench(
    conf: RunConf,
    camera: str,
    model: str | Path,
    index_dir: str | Path,
    frames: int,
    intrinsics: str | Path | None = None,
    progress=None,
) -> dict:
    """Process ``frames`` frames as fast as possible (a replay loops) and measure latency and memory.

    Memory growth is measured from the end of the warm-up (one lap of a sim flight or a tenth of
    the run, whichever is shorter, so caches of tile features are full) to the end.
    """
    from geolink_edge.backends import load_embedder

    if frames < 1:
        raise GeolinkError(f"--frames must be at least 1, got {frames}")
    reader = open_reader(camera, conf.width, conf.height, conf.fps, loop=True)
    options = {"threads": conf.threads} if conf.threads and str(model).endswith(".onnx") else {}
    embedder = load_embedder(model, **options)
    index = open_index(index_dir, embedder.card, model)
    pipeline = Pipeline(embedder, index, conf, resolve_intrinsics(intrinsics, reader))
    lap = len(getattr(reader, "files", ())) or frames
    warmup = max(1, min(lap, frames // 10))
    rss: dict[str, int] = {}
    errors: list[str] = []

    def on_record(record: dict, summary: Summary) -> None:
        if summary.frames == warmup:
            rss["after_warmup"] = rss_bytes()
        if progress is not None:
            progress(summary.frames)

    bench_conf = replace(conf, realtime=False, max_frames=frames)
    capture = Capture(reader, realtime=False)
    with capture:
        try:
            summary = run_frames(pipeline, capture, bench_conf, on_record)
        except Exception as exc:  # a soak reports the failure instead of losing the figures
            errors.append(f"{exc.__class__.__name__}: {exc}")
            summary = Summary()
    rss["end"] = rss_bytes()
    base = rss.get("after_warmup", rss["end"])
    result = summary.result(**source_counters(capture), model=embedder.name, camera=camera)
    stages = result["latency_ms"]
    total, embed = stages.get("total", {}).get("median"), stages.get("embed", {}).get("median")
    result.update(
        rss_mb={"after_warmup": base / 2**20, "end": rss["end"] / 2**20, "peak": peak_rss_bytes() / 2**20},
        rss_growth=(rss["end"] - base) / base if base else None,
        non_inference_share=(total - embed) / total if total and embed is not None else None,
        errors=errors,
    )
    return clean(result)
