"""The run stage: source → embed → locate → filter → sinks, one record per frame.

Capture runs on its own thread and keeps only the newest frame; the MAVLink link heartbeats,
listens and sends the filter's prediction at a fixed rate on its own threads. A slow stage makes
the loop skip stale frames instead of falling behind, and nothing in the air ends it: a camera
outage is reported and waited out, a frame that raises becomes an ``error`` record, a failing sink
is counted — the autopilot keeps hearing from us. SIGTERM/SIGINT end a run cleanly.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from geolink_edge.errors import GeolinkError, describe
from geolink_edge.geo import haversine_m
from geolink_edge.runtime.autopilot import Estimate, TrackPredictor
from geolink_edge.runtime.conf_yaml import to_dict
from geolink_edge.runtime.filter import FilterConf, TrackFilter
from geolink_edge.runtime.health import CameraWatch, Events, Stop, stop_on_signals
from geolink_edge.runtime.intrinsics import Intrinsics, load_intrinsics
from geolink_edge.runtime.locate import LocateConf, Locator
from geolink_edge.runtime.retrieval import near_region, open_index
from geolink_edge.runtime.sinks import ConsoleSink, JsonlSink, Summary, clean
from geolink_edge.runtime.sources import Capture, Frame, GnssFix, Reader, SimReader, Telemetry, open_reader

PACED_BUDGET_S = 0.8  # a paced frame's search: with the embedding, under a second
POLL_S = 0.25  # how often the loop looks at the stop flag and the camera while no frame comes


@dataclass(frozen=True)
class RunConf:
    locate: LocateConf = field(default_factory=LocateConf)
    filter: FilterConf = field(default_factory=FilterConf)
    search_sigmas: float = 3.0  # radius of the near search around the prediction, in sigmas
    search_floor_m: float | None = None  # least radius of the near search (default: one tile)
    realtime: bool = True  # pace recordings at their own clock and drop stale frames, like a camera
    max_frames: int | None = None  # stop after this many frames (None: when the source ends)
    altitude: float | None = None  # fixed height above ground, when no autopilot reports it
    sim_telemetry: bool = True  # a sim flight supplies the attitude an autopilot would report
    width: int = 1280  # camera frame size and rate asked of V4L2 and CSI cameras
    height: int = 720  # (px)
    fps: float = 30.0  # (frames per second)
    threads: int = 0  # ONNX Runtime intra-op threads (0: its default)
    camera_lost_s: float = 2.0  # no frame for this long: report the camera lost (the loop goes on)
    warm_start: bool = True  # start a track from the autopilot's GNSS while it has a 3D fix
    near: tuple[float, float, float] | None = None  # (lat, lon, radius_m) known start area
    # after a track is lost, every candidate where it could now be is verified while that area's
    # radius is within this (a global search of a weak descriptor mostly finds look-alikes); 0: off
    reacquire_max_m: float = 200.0


def paced(conf: RunConf, frame_budget: float | None = None) -> RunConf:
    """``conf`` with the frame budget given, else the config's, else ``PACED_BUDGET_S`` when paced; a
    paced run reads new map windows beside the frames."""
    budget = frame_budget if frame_budget is not None else conf.locate.budget_s
    if budget is None and conf.realtime:
        budget = PACED_BUDGET_S
    background = conf.locate.background_windows or conf.realtime
    return replace(conf, locate=replace(conf.locate, budget_s=budget, background_windows=background))


def resolve_intrinsics(path: str | Path | None, reader) -> Intrinsics | None:
    """``--intrinsics``, or the camera file that comes with a sim flight."""
    if path is not None:
        return load_intrinsics(path)
    if isinstance(reader, SimReader) and reader.camera_yaml.is_file():
        return load_intrinsics(reader.camera_yaml)
    return None


class Pipeline:
    """Embed, locate and filter one frame at a time; turns each frame into a log record.

    ``gnss`` returns the autopilot's own satellite fix while it has one that is not ours: a warm
    start for the track and a reference for every estimate's error (shadow mode).
    ``predictor`` is what the MAVLink output sends between frames, from its own thread.
    """

    def __init__(
        self,
        embedder,
        index,
        conf: RunConf,
        intrinsics: Intrinsics | None = None,
        mavlink=None,
        events: Events | None = None,
        gnss=None,
    ):
        self.embedder = embedder
        self.index = index
        self.conf = conf
        self.locator = Locator(index, conf.locate, intrinsics)
        self.filter = TrackFilter(conf.filter)
        self.mavlink = mavlink
        self.events = events or Events()
        self.gnss = gnss
        # the tile under the drone has its centre within one tile size of it; a map window around the
        # prediction already has the frame's footprint as margin
        tile_m = (getattr(index, "manifest", {}).get("tiling") or {}).get("tile_m") or 100.0
        floor = conf.locate.window_floor_m if self.locator.windows is not None else float(tile_m)
        self.search_floor_m = conf.search_floor_m or floor
        self.start_region = near_region(index, conf.near) if conf.near is not None else None
        self.predictor = TrackPredictor(self.filter, self._to_geodetic)

    def telemetry(self, frame: Frame) -> Telemetry | None:
        # the attitude when the frame was taken (a body-fixed camera turns with the vehicle)
        source = self.mavlink.telemetry(frame.t_capture) if self.mavlink is not None else None
        if source is None and self.conf.sim_telemetry:
            source = frame.telemetry
        if self.conf.altitude is not None:
            base = source or Telemetry()
            source = Telemetry(base.yaw, base.pitch, base.roll, self.conf.altitude)
        return source

    def run(self, frame: Frame) -> dict:
        """The frame's record; a frame that raises becomes an ``error`` record and a miss."""
        t0 = time.perf_counter()
        try:
            return self.process(frame)
        except Exception as exc:  # cv2.error, a backend's error, a bug on one odd frame: fly on
            error = describe(exc)
            was_tracking = self.has_track()
            self.events.guard(self.filter.miss, frame.t_sensor)
            self._report_track(was_tracking)
            self.events("frame_error", f"frame failed: {error}"[:50], "error", frame=frame.index, error=error)
            return {
                "frame": frame.index,
                "t_capture": frame.t_capture,
                "t_sensor": frame.t_sensor,
                "status": "error",
                "error": error,
                "latency_ms": {"total": (time.perf_counter() - t0) * 1e3},
                "t_done": time.time(),
            }

    def process(self, frame: Frame) -> dict:
        latency: dict[str, float] = {"age": (time.monotonic() - frame.t_mono) * 1e3}
        t0 = time.perf_counter()
        descriptor = self.embedder.embed([frame.image])[0]
        t1 = time.perf_counter()
        latency["embed"] = (t1 - t0) * 1e3
        telemetry = self.telemetry(frame)
        gnss = self.gnss() if self.gnss is not None else None
        self._warm_start(frame, gnss)
        region, exhaustive = self._search_region(frame.t_sensor)
        fix = self.locator.locate(frame.image, descriptor, region, telemetry, exhaustive)
        t2 = time.perf_counter()
        for stage in ("search", "verify", "pose"):
            latency[stage] = fix.timing_ms.get(f"{stage}_ms", 0.0)
        was_tracking = self.has_track()
        if fix.ok:
            update = self.filter.update(frame.t_sensor, np.array([fix.x, fix.y]), np.asarray(fix.cov))
        else:
            update = self.filter.miss(frame.t_sensor)
        accepted = update.status == "accepted"
        self.locator.confirm(accepted)
        self.predictor.observe(
            frame.t_sensor, frame.t_capture, fix.heading, fix.alt, fix.inliers if accepted else 0
        )
        self._report_track(was_tracking)
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
        estimate = self.predictor(frame.t_capture) if accepted else None
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
        self._errors(record, frame, fix, estimate)
        self._shadow(record, fix, estimate, gnss)
        latency["total"] = (time.perf_counter() - t0) * 1e3
        record["latency_ms"] = latency
        record["t_done"] = time.time()
        return record

    def _search_region(self, t: float) -> tuple[tuple[float, float, float] | None, bool]:
        """Where to verify at ``t`` and whether every candidate there: near the track's prediction;
        without a track, every candidate of a known area — the start area before the first track,
        the lost track's predicted area while it is narrow enough — around the fix awaiting
        confirmation when that is narrower; else nowhere in particular (a global search)."""
        region = self.filter.search_region(t, self.conf.search_sigmas, self.search_floor_m)
        if region is not None:
            return region, False
        if self.filter.starts == 0:
            area = self.start_region
        else:
            area = self.filter.lost_region(t, self.conf.search_sigmas, self.search_floor_m)
            area = area if area is not None and area[2] <= self.conf.reacquire_max_m else None
        if area is None:
            return None, False
        pending = self.filter.pending()
        if pending is not None:
            t0, (x, y) = pending
            reach = self.conf.filter.max_speed * abs(t - t0) + self.search_floor_m
            area = (x, y, reach) if reach < area[2] else area
        return area, True

    def _warm_start(self, frame: Frame, gnss: GnssFix | None) -> None:
        """No track, but the autopilot has a GNSS fix: start the track there (a near search at once)."""
        if gnss is None or not self.conf.warm_start or self.filter.tracking or self.index.frame is None:
            return
        east, north, _ = self.index.frame.to_enu(gnss.lat, gnss.lon)
        sigma = gnss.h_acc if gnss.h_acc else 5.0
        self.filter.warm_start_search_at(frame.t_sensor, np.array([east, north]), np.eye(2) * sigma**2)
        self.events("warm_start", "track started from the autopilot GNSS", "info")

    def has_track(self) -> bool:
        """A track that holds a fix of ours (a warm start alone is never told to the autopilot)."""
        return self.filter.tracking and self.filter.t_fix is not None

    def _report_track(self, was_tracking: bool) -> None:
        tracking = self.has_track()
        if tracking and not was_tracking:
            self.events("fix_acquired", "fix acquired", "notice", tell=False)
        elif was_tracking and not tracking:
            self.events("fix_lost", "fix lost", "warning", tell=False)

    def _to_geodetic(self, east: float, north: float) -> tuple[float, float]:
        if self.index.frame is None:
            return float("nan"), float("nan")
        lat, lon, _ = self.index.frame.to_geodetic(east, north)
        return float(lat), float(lon)

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

    @staticmethod
    def _shadow(record: dict, fix, estimate: Estimate | None, gnss: GnssFix | None) -> None:
        """Shadow mode: our estimate and raw fix against the autopilot's GNSS, a field test's truth."""
        if gnss is None:
            return
        record["gnss"] = {
            "lat": gnss.lat,
            "lon": gnss.lon,
            "h_acc": gnss.h_acc,
            "satellites": gnss.satellites,
        }
        if estimate is not None:
            record["gnss_error_m"] = float(haversine_m(gnss.lat, gnss.lon, estimate.lat, estimate.lon))
        if fix.ok and fix.lat is not None:
            record["fix_gnss_error_m"] = float(haversine_m(gnss.lat, gnss.lon, fix.lat, fix.lon))


def run_frames(
    pipeline: Pipeline, capture: Capture, conf: RunConf, on_record, stop: Stop | None = None
) -> Summary:
    """Drive the pipeline until the source ends, ``max_frames`` or ``stop``; ``on_record`` gets every record.

    A camera that delivers nothing is reported lost after ``conf.camera_lost_s`` and waited for.
    """
    summary = Summary()
    watch = CameraWatch(pipeline.events, conf.camera_lost_s)
    stop = stop or Stop()
    t_wait = time.perf_counter()
    while not stop.is_set() and (conf.max_frames is None or summary.frames < conf.max_frames):
        frame = capture.get(timeout=min(POLL_S, conf.camera_lost_s))
        if frame is None:
            if capture.ended:
                break
            watch.idle(capture.last_error)
            continue
        watch.frame()
        wait_ms = (time.perf_counter() - t_wait) * 1e3
        record = pipeline.run(frame)
        record["latency_ms"]["wait"] = wait_ms
        summary.add(record)
        pipeline.events.guard(on_record, record, summary)
        t_wait = time.perf_counter()
    summary.camera = watch.totals()
    return summary


def source_counters(capture: Capture) -> dict:
    return {
        "corrupt_frames": capture.corrupt,
        "dropped_frames": capture.dropped,
        "reconnects": capture.reconnects,
    }


def main(
    conf: RunConf,
    camera: str | Reader,
    model: str | Path,
    index_dir: str | Path,
    intrinsics: str | Path | None = None,
    mavlink: dict | None = None,
    log: str | Path | None = None,
    console: bool = True,
    stop: Stop | None = None,
) -> dict:
    """Run the onboard localization until the source ends, ``max_frames``, SIGTERM or SIGINT.

    ``camera`` is a camera URI or an opened reader (a simulated camera). ``mavlink`` holds the
    keyword arguments of :class:`MavlinkSink` (``url`` first). Returns the
    summary (also the last line of the log, whose actual name — never an existing file — it names).
    """
    from geolink_edge.backends import load_embedder

    stop = stop or Stop()
    with ExitStack() as resources:
        reader = open_reader(camera, conf.width, conf.height, conf.fps) if isinstance(camera, str) else camera
        options = {"threads": conf.threads} if conf.threads and str(model).endswith(".onnx") else {}
        embedder = load_embedder(model, **options)
        if hasattr(embedder, "close"):  # TensorRT: GPU memory and the CUDA context
            resources.callback(embedder.close)
        index = open_index(index_dir, embedder.card, model)
        camera_model = resolve_intrinsics(intrinsics, reader)
        link = None
        if mavlink:
            from geolink_edge.runtime.mavlink import MavlinkSink

            options = dict(mavlink)
            if index.frame is not None:  # offered to an autopilot with no origin (ODOMETRY without GPS)
                options.setdefault(
                    "origin", (index.frame.lat0, index.frame.lon0, options.get("home_alt_msl") or 0.0)
                )
            link = MavlinkSink(**options)
            resources.callback(link.close)
        jsonl = JsonlSink(log) if log else None
        if jsonl is not None:
            jsonl.write({"config": to_dict(conf)})  # the settings this flight ran with, first
        view = ConsoleSink(enabled=console)
        resources.callback(view.close)
        if jsonl is not None and jsonl.path != jsonl.requested:
            view.event(f"log: {jsonl.path} ({jsonl.requested.name} exists)")
        events = Events(
            write=jsonl.write if jsonl is not None else None,
            show=view.event,
            statustext=link.statustext if link is not None else None,
        )
        gnss = link.autopilot_gnss if link is not None else None  # None while it is our own fix
        pipeline = Pipeline(embedder, index, conf, camera_model, link, events, gnss)
        if link is not None:
            link.start_stream(pipeline.predictor)
        # paced replays drop stale frames like a camera; unpaced ones hand over every frame
        capture = Capture(reader, realtime=conf.realtime, drop=True if conf.realtime else None)

        def on_record(record: dict, summary: Summary) -> None:
            view.update(record, summary.fps)
            if jsonl is not None:
                jsonl.write(record)

        summary_dict: dict = {}
        try:
            with stop_on_signals(stop), capture:
                summary = run_frames(pipeline, capture, conf, on_record, stop)
            extra = {
                **source_counters(capture),
                "events": events.counts,
                "sink_errors": events.sink_errors,
                "stopped_by": stop.reason,
                "model": embedder.name,
                "camera": camera if isinstance(camera, str) else type(camera).__name__,
                "intrinsics": camera_model is not None,
                "log": str(jsonl.path) if jsonl is not None else None,
            }
            if link is not None:
                link.close()  # the stream stops here, so the counts are final
                extra.update(
                    mavlink_sent=link.sent,
                    mavlink_refused=link.refused,
                    mavlink_no_fix=link.no_fix_sent,
                    mavlink_stream_errors=link.stream_errors,
                    autopilot_problems=link.problems,
                )
            summary_dict = summary.result(**extra)
            if link is not None:
                summary_dict["autopilot_delay"] = link.delay_parameters(summary_dict["latency_ms"])
        finally:
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
    the run, whichever is shorter, so caches of tile features are full) to the end. A frame that
    raises is counted (``frame_errors``, ``errors``) and the run goes on: the figures are kept.
    """
    from geolink_edge.backends import load_embedder

    if frames < 1:
        raise GeolinkError(f"--frames must be at least 1, got {frames}")
    reader = open_reader(camera, conf.width, conf.height, conf.fps, loop=True)
    options = {"threads": conf.threads} if conf.threads and str(model).endswith(".onnx") else {}
    with ExitStack() as resources:
        embedder = load_embedder(model, **options)
        if hasattr(embedder, "close"):
            resources.callback(embedder.close)
        index = open_index(index_dir, embedder.card, model)
        pipeline = Pipeline(embedder, index, conf, resolve_intrinsics(intrinsics, reader))
        lap = len(getattr(reader, "files", ())) or frames
        warmup = max(1, min(lap, frames // 10))
        rss: dict[str, int] = {}

        def on_record(record: dict, summary: Summary) -> None:
            if summary.frames == warmup:
                rss["after_warmup"] = rss_bytes()
            if progress is not None:
                progress(summary.frames)

        with Capture(reader, realtime=False) as capture:
            summary = run_frames(
                pipeline, capture, replace(conf, realtime=False, max_frames=frames), on_record
            )
    rss["end"] = rss_bytes()
    base = rss.get("after_warmup", rss["end"])
    result = summary.result(**source_counters(capture), model=embedder.name, camera=camera)
    stages = result["latency_ms"]
    total, embed = stages.get("total", {}).get("median"), stages.get("embed", {}).get("median")
    result.update(
        rss_mb={"after_warmup": base / 2**20, "end": rss["end"] / 2**20, "peak": peak_rss_bytes() / 2**20},
        rss_growth=(rss["end"] - base) / base if base else None,
        non_inference_share=(total - embed) / total if total and embed is not None else None,
        errors=[f"{error} ({count}×)" for error, count in summary.failures.items()],
    )
    return clean(result)
