"""One ``geolink-edge sitl`` flight end to end: fly, then write report.json, path.png and a table."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from geolink_edge import atomic
from geolink_edge.sim import report
from geolink_edge.sim.flight import Flight, FlightConf, read_log


def fly(conf: FlightConf, scene, sitl_folder: Path, model, index, out: Path, ortho: Path) -> dict:
    out.mkdir(parents=True)
    flight = Flight(conf, scene, sitl_folder, model, index, out)
    result = flight.run()
    seen = flight.sitl.seen
    truth = report.Truth(seen)
    fixes = report.our_fixes(read_log(flight.log), truth)
    rows = report.per_second(seen, truth)
    figures = report.figures(seen, result, fixes, truth)
    goals = report.goals(figures, result)
    ok = result.mission_completed and result.landed and not result.runtime_stuck
    render = report.stats(result.render_ms)
    document = {
        "ok": ok,
        "target": conf.target,
        "config": json.loads(json.dumps(asdict(conf), default=str)),
        "integration_params": result.params,
        "home": dict(zip(("lat", "lon", "alt"), result.home, strict=True)),
        "gnss_cut_unix": result.gnss_cut_unix,
        "t_armed": result.t_armed,
        "t_takeoff_done": result.t_takeoff_done,
        "t_landed": result.t_landed,
        "mission_completed": result.mission_completed,
        "landed": result.landed,
        "failure": result.failure,
        "runtime_stuck": result.runtime_stuck,
        "figures": figures,
        "goals": goals,
        "render_ms": render,
        "runtime_summary": result.runtime_summary,
        "mission": report.mission_progress(seen),
        "statustext": report.statustexts(seen),
        "fixes": fixes,
        "per_second": rows,
    }
    atomic.write_json(out / "report.json", document)
    if len(truth.t):
        with atomic.atomic_path(out / "path.png") as tmp:
            report.draw_path(ortho, truth, fixes, rows, result.gnss_cut_unix, tmp)
    print_table(document)
    return document


def number(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def print_table(document: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    f = document["figures"]
    table = Table(title=f"geolink-edge sitl: {document['target']}")
    for column in ("figure", "value"):
        table.add_column(column)

    def stat(d, fmt="{:.2f}"):
        return "-" if not d else f"median {fmt.format(d['median'])}, max {fmt.format(d['max'])}"

    rows = [
        (
            "mission completed and landed",
            str(document["ok"]) + (f" ({document['failure']})" if document["failure"] else ""),
        ),
    ]
    if f.get("gnss_cut"):
        rows += [
            ("GNSS off, flying (s)", f"{f['gnss_off_flying_s']:.0f}"),
            ("landing from home (m)", f"{f['landing_from_home_m']:.2f}"),
            ("EKF flag 16 share, cut+10 s to touchdown", f"{100 * f['ekf_abs_share']:.1f} %"),
            (
                "EKF position gaps (s after cut: length)",
                ", ".join(f"{g['after_cut_s']:.0f}: {g['s']:.1f} s" for g in f["ekf_abs_gaps"]) or "none",
            ),
            ("last estimate before touchdown (s)", number(f["last_estimate_to_touchdown_s"], "{:.1f}")),
            ("glitch/failsafe/variance texts", str(len(f["bad_texts"]))),
            ("autopilot error vs SIMSTATE (m)", stat(f["autopilot_error_m"])),
            ("reported accuracy (m)", stat(f["reported_accuracy_m"])),
            ("our error (m)", stat(f["our_error_m"])),
            (
                "errors within 2x reported",
                "-" if f["within_2x_reported"] is None else f"{100 * f['within_2x_reported']:.1f} %",
            ),
            ("SITL speed (sim s / wall s)", number(f["realtime_ratio"], "{:.3f}")),
        ]
    rows.append(("render per frame (ms)", stat(document["render_ms"], "{:.1f}")))
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
    failed = [goal for goal, passed in document["goals"].items() if not passed]
    Console().print("goals not met: " + (", ".join(failed) if failed else "none"))
