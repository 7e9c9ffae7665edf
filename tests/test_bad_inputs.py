"""Bad input through the real CLI: one line on stderr, exit code 2, no traceback, nothing left behind.

Every case runs ``geolink_edge.cli.main`` in-process (the same code path as the console script,
a few seconds cheaper per case than a subprocess) and checks that the output it was asked to
write does not exist afterwards, and that a pre-existing output is untouched.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from _dataset_fixtures import write_denseuav, write_image
from _index_fixtures import LAT0, LON0, texture, write_corner_csv, write_geotiff
from _train_fixtures import make_dataset

from geolink_edge.cli import main as cli_main
from geolink_edge.errors import GeolinkError

ORTHO_PX = 192  # 1 m/px, tiles of 64 m: a few dozen tiles, built in about a second


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_checkpoint, tiny_onnx):
    """Valid inputs next to broken copies of them; every case names the ones it needs."""
    from geolink_edge.index.build import BuildConfig
    from geolink_edge.index.build import main as build_index

    root = tmp_path_factory.mktemp("bad_inputs")
    data = make_dataset(root / "data", train=8, test=2, distractors=0, views=2, size=32, points=64)
    image = texture(ORTHO_PX, ORTHO_PX)
    ortho = write_geotiff(root / "ortho.tif", image)
    index = build_index(BuildConfig(tile_m=64.0, workers=1), tiny_onnx, root / "index", ortho=[ortho])
    camera = root / "camera"
    write_image(camera / "000.png", seed=1, size=64)

    (root / "empty").mkdir()
    unreadable = shutil.copytree(data, root / "unreadable_image")
    next((unreadable / "train" / "drone").rglob("*.jpg")).write_bytes(b"not a jpeg")
    bad_gps = shutil.copytree(data, root / "bad_gps")
    with open(bad_gps / "gps.csv", "a") as f:
        f.write("L001,forty-seven,8.0\n")
    dense = write_denseuav(root / "denseuav")
    gps_txt = dense / "Dense_GPS_ALL.txt"
    gps_txt.write_text(gps_txt.read_text() + "train/drone/000000/H80.JPG E120.38 N\n")

    write_geotiff(root / "no_crs.tif", image, crs=None)
    corners = write_corner_csv(root / "corners", image, LAT0, LON0, (1e-5, 1.5e-5))
    corners.write_text(corners.read_text() + "img/0_0.png,47.3,not-a-number,47.2,8.6\n")

    blob = Path(tiny_checkpoint).read_bytes()
    (root / "truncated.pt").write_bytes(blob[: len(blob) // 2])
    import torch

    torch.save({"state_dict": {"w": torch.zeros(2)}}, root / "foreign_dict.pt")
    torch.save(torch.randn(4, 4), root / "tensor.pt")
    (root / "model.h5").write_bytes(b"\x89HDF\r\n")
    _index_of_another_model(index, root / "other_index")
    engine = root / "encoder.engine"
    engine.write_bytes(b"\0" * 64)

    (root / "broken.yaml").write_text("camera_matrix: {rows: 3, cols: 3, data: [1, 2\n")
    (root / "negative_focal.yaml").write_text("fx: -500\nfy: 500\ncx: 32\ncy: 32\n")
    (root / "garbage.png").write_bytes(b"PNG? no")
    existing = root / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    return {
        "root": root,
        "data": data,
        "ortho": ortho,
        "index": index,
        "camera": camera,
        "ckpt": Path(tiny_checkpoint),
        "onnx": Path(tiny_onnx),
    }


def _index_of_another_model(index: Path, out: Path) -> Path:
    """A copy of ``index`` that says another model (another weights hash) embedded its tiles."""
    shutil.copytree(index, out)
    meta = json.loads((out / "index.json").read_text())
    meta["model_hash"] = meta["model_card"]["weights_hash"] = "f" * 64
    (out / "index.json").write_text(json.dumps(meta))
    return out


def _run(w: dict, case: str) -> None:
    """The command line of ``case``; {name} is a path from the world, {r} its root, {out} the output."""
    argv = CASES[case][0].split()
    paths = {k: str(v) for k, v in w.items()}
    cli_main([a.format(r=paths["root"], **paths) for a in argv])


# case -> (command line, text the one line must contain)
CASES = {
    # datasets
    "train: missing dataset": ("train {r}/nowhere --out {out} --preset tiny", "nowhere"),
    "train: empty dataset": ("train {r}/empty --out {out} --preset tiny --epochs 1", "empty"),
    "eval: empty dataset": ("eval {ckpt} {r}/empty --json {out}/eval.json", "empty"),
    "reconstruct: missing dataset": ("reconstruct {r}/nowhere --backend dsm --out {out}", "nowhere"),
    "reconstruct: empty dataset": ("reconstruct {r}/empty --backend dsm --out {out}", "empty"),
    "export: empty --calib-data": (
        "export {ckpt} --out {out} --int8 --calib-data {r}/empty --calib-images 4",
        "empty",
    ),
    "train: unreadable image": (
        "train {r}/unreadable_image --out {out} --preset tiny --epochs 1 --points 64",
        ".jpg",
    ),
    "train: malformed gps.csv row": (
        "train {r}/bad_gps --out {out} --preset tiny --epochs 1 --points 64",
        "gps.csv",
    ),
    "eval: malformed Dense_GPS line": ("eval {ckpt} {r}/denseuav --json {out}/eval.json", "Dense_GPS"),
    "eval: unknown --device": ("eval {ckpt} {r}/denseuav --device foo", "'foo' is not a device"),
    # maps
    "index build: raster without CRS": (
        "index build --model {onnx} --out {out} --ortho {r}/no_crs.tif --tile-m 64",
        "CRS",
    ),
    "index build: malformed corner CSV row": (
        "index build --model {onnx} --out {out} --tiles {r}/corners/map.csv --tile-m 64",
        "map.csv",
    ),
    # models
    "export: truncated checkpoint": ("export {r}/truncated.pt --out {out}", "truncated.pt"),
    "export: foreign checkpoint (plain dict)": ("export {r}/foreign_dict.pt --out {out}", "foreign_dict.pt"),
    "index build: tensor file as model": (
        "index build --model {r}/tensor.pt --out {out} --ortho {ortho} --tile-m 64",
        "tensor.pt",
    ),
    "run: unknown model suffix": ("run --camera {camera} --model {r}/model.h5 --index {index}", "model.h5"),
    "run: model/index hash mismatch": (
        "run --camera {camera} --model {onnx} --index {r}/other_index --log {out}/log.jsonl",
        "other_index",
    ),
    "locate: model/index hash mismatch": (
        "locate {camera}/000.png --model {onnx} --index {r}/other_index",
        "other_index",
    ),
    "run: engine without sidecar": (
        "run --camera {camera} --model {r}/encoder.engine --index {index}",
        "sidecar",
    ),
    # cameras and intrinsics
    "run: missing camera folder": ("run --camera {r}/no_camera --model {onnx} --index {index}", "no_camera"),
    "run: unknown --mavlink-target without --mavlink": (
        "run --camera {camera} --model {onnx} --index {index} --mavlink-target px5",
        "--mavlink-target 'px5'",
    ),
    "run: intrinsics YAML that does not parse": (
        "run --camera {camera} --model {onnx} --index {index} --intrinsics {r}/broken.yaml",
        "broken.yaml",
    ),
    "locate: intrinsics with a negative focal length": (
        "locate {camera}/000.png --model {onnx} --index {index} --intrinsics {r}/negative_focal.yaml",
        "fx",
    ),
    "locate: unreadable image": ("locate {r}/garbage.png --model {onnx} --index {index}", "garbage.png"),
    # numbers
    "synth: --locations -1": ("synth {out} --locations -1", "--locations"),
    "train: --epochs 0": ("train {data} --out {out} --preset tiny --epochs 0", "epochs"),
    "index build: --tile-m -5": (
        "index build --model {onnx} --out {out} --ortho {ortho} --tile-m -5",
        "tile",
    ),
    "run: --altitude -3": (
        "run --camera {camera} --model {onnx} --index {index} --altitude -3",
        "--altitude",
    ),
    "locate: --pitch 0 (the horizon)": (
        "locate {camera}/000.png --model {onnx} --index {index} --heading 10 --pitch 0",
        "--pitch",
    ),
    "run: --mount wing": ("run --camera {camera} --model {onnx} --index {index} --mount wing", "--mount"),
    "run: --mavlink-target px5": (
        "run --camera {camera} --model {onnx} --index {index} --mavlink udpout:127.0.0.1:9 "
        "--mavlink-target px5 --log {out}/log.jsonl",
        "--mavlink-target",
    ),
    "export: --calib-images 0": (
        "export {ckpt} --out {out} --int8 --calib-data {data} --calib-images 0",
        "--calib-images",
    ),
    # outputs that exist
    "synth: existing output": ("synth {r}/existing --locations 2", "existing"),
    "train: existing output": ("train {data} --out {r}/existing --preset tiny --epochs 1", "existing"),
    "export: existing output": ("export {ckpt} --out {r}/existing", "existing"),
    "index build: existing output": (
        "index build --model {onnx} --out {r}/existing --ortho {ortho} --tile-m 64",
        "existing",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(world, case, capsys, tmp_path):
    world = {**world, "out": tmp_path / "out"}
    before = _snapshot(world["root"])
    with pytest.raises(SystemExit) as exit_info:
        _run(world, case)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    # a command may warn first (e.g. "backbone starts from random weights"); the failure is one line
    lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert CASES[case][1].lower() in lines[0].lower(), lines[0]
    assert not world["out"].exists(), f"{case} left {world['out']} behind"
    assert _snapshot(world["root"]) == before, f"{case} wrote next to its inputs"


def _snapshot(root: Path) -> dict[str, int]:
    """Every file under ``root`` with its size: temp folders and partial files show up here."""
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def test_missing_camera_is_waited_for_and_sigterm_ends_the_run_cleanly(world, tmp_path, monkeypatch):
    """A camera may be plugged in late or fail in the air: ``run`` never gives up on it. It reports
    the camera lost (log, STATUSTEXT), keeps its MAVLink heartbeat, and ends on SIGTERM with exit 0,
    the summary written and every thread stopped."""
    import signal
    import socket
    import subprocess
    import sys
    import time

    monkeypatch.setenv("MAVLINK20", "1")
    from pymavlink import mavutil

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    listener = mavutil.mavlink_connection(f"udpin:127.0.0.1:{port}")
    log = tmp_path / "log.jsonl"
    command = [sys.executable, "-m", "geolink_edge.cli", "run", "--camera", "/dev/video99"]
    command += ["--model", world["onnx"], "--index", world["index"], "--log", log, "--quiet"]
    command += ["--camera-lost", "0.5", "--mavlink", f"udpout:127.0.0.1:{port}"]
    run = subprocess.Popen(
        [str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen: dict[str, list] = {}
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not ("camera_lost" in log.read_text() if log.exists() else False):
            msg = listener.recv_match(blocking=True, timeout=0.2)
            if msg is not None:
                seen.setdefault(msg.get_type(), []).append(msg)
        for _ in range(15):  # a little more of what the autopilot hears
            msg = listener.recv_match(blocking=True, timeout=0.2)
            if msg is not None:
                seen.setdefault(msg.get_type(), []).append(msg)
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
        listener.close()
    assert run.returncode == 0, err
    assert "Traceback" not in err
    assert json.loads(out)["summary"]["stopped_by"] == "SIGTERM"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    lost = [r for r in records if r.get("event") == "camera_lost"]
    assert len(lost) == 1 and "/dev/video99" in lost[0]["text"]
    summary = records[-1]["summary"]
    assert summary["frames"] == 0 and summary["camera_outages"]["outages"] == 1
    assert len(seen.get("HEARTBEAT", [])) >= 1
    texts = [m.text for m in seen.get("STATUSTEXT", [])]
    assert any(t.startswith("geolink: camera lost") for t in texts), texts


def test_engine_for_another_tensorrt_or_gpu_is_refused(tmp_path, tiny_onnx):
    """The comparison TensorRTEmbedder makes before deserialising: both sides named, one line."""
    from geolink_edge.backends import load_embedder
    from geolink_edge.export.sidecar import check_compatible, make_sidecar, read_sidecar, write_sidecar

    card = load_embedder(tiny_onnx).card
    engine = tmp_path / "encoder.engine"
    engine.write_bytes(b"\0" * 16)
    write_sidecar(
        engine,
        make_sidecar(
            tensorrt_version="10.3.0",
            gpu_name="Orin",
            compute_capability="8.7",
            source_onnx_sha256="0" * 64,
            precision="int8",
            inputs=[],
            outputs=[],
            profile={"min": 1, "opt": 1, "max": 4},
            model_card=card,
        ),
    )
    sidecar = read_sidecar(engine)
    check_compatible(sidecar, "10.3.0", "Orin", "8.7")  # the machine that built it
    for trt, gpu, cc, names in [
        ("8.6.2", "Orin", "8.7", ("10.3.0", "8.6.2")),
        ("10.3.0", "NVIDIA GeForce RTX 4090", "8.9", ("Orin", "RTX 4090", "8.9")),
    ]:
        with pytest.raises(GeolinkError) as info:
            check_compatible(sidecar, trt, gpu, cc, where=str(engine))
        message = str(info.value)
        assert "\n" not in message and str(engine) in message and all(n in message for n in names)
    (tmp_path / "encoder.engine.json").write_text('{"tensorrt_version": "10.3.0"')
    with pytest.raises(GeolinkError, match="not JSON"):
        read_sidecar(engine)
