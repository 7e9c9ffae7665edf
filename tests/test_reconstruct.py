"""Offline reconstruction: COLMAP model files, the resumable stage, and real SfM on a synthetic scene."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import faiss
import numpy as np
import pycolmap
import pytest
from _dataset_fixtures import write_university1652

from geolink_edge import cli
from geolink_edge.data import pointclouds
from geolink_edge.data.datasets import open_dataset
from geolink_edge.errors import GeolinkError
from geolink_edge.train import colmap_io, sfm
from geolink_edge.train.reconstruct import CONFS, REPORT, main

# Median distance from aligned SfM points to the true surface. Measured 1.05-1.25 m on such scenes
# (256 px views from 95-270 m: about one pixel's ground footprint), so 2 m leaves room for noise.
MEDIAN_ERROR_BOUND_M = 2.0


def _cloud(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-20, 20, (n, 3)) + [500.0, -300.0, 40.0]
    return xyz, rng.integers(0, 256, (n, 3)).astype(np.uint8)


def write_points_text(path, xyz, rgb) -> None:
    """points3D.txt as COLMAP documents it, with comments and tracks of varying length."""
    lines = [
        "# 3D point list with one line of data per point:",
        "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[]",
    ]
    for i, (p, c) in enumerate(zip(xyz, rgb, strict=True)):
        track = " ".join(f"{img} {i + img}" for img in range(1, 2 + i % 3))
        lines.append(
            f"{i + 1} {float(p[0])!r} {float(p[1])!r} {float(p[2])!r} {c[0]} {c[1]} {c[2]} 0.5 {track}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def write_points_binary(path, xyz, rgb) -> None:
    chunks = [struct.pack("<Q", len(xyz))]
    for i, (p, c) in enumerate(zip(xyz, rgb, strict=True)):
        track = 2 + i % 4
        chunks.append(struct.pack("<Q3d3BdQ", i + 7, *p, *(int(v) for v in c), 0.25, track))
        chunks.append(b"".join(struct.pack("<II", k, 10 * k + i) for k in range(track)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(chunks))


# --- COLMAP model files ------------------------------------------------------------------------


def test_text_and_binary_models_give_the_same_points(tmp_path):
    xyz, rgb = _cloud(0, 25)
    write_points_text(tmp_path / "t" / "points3D.txt", xyz, rgb)
    write_points_binary(tmp_path / "b" / "sparse" / "0" / "points3D.bin", xyz, rgb)
    for folder in ("t", "b"):
        got_xyz, got_rgb = colmap_io.read_points3d(colmap_io.find_points3d(tmp_path / folder))
        assert np.array_equal(got_xyz, xyz) and np.array_equal(got_rgb, rgb)


def test_reader_agrees_with_files_written_by_colmap(tmp_path):
    xyz, rgb = _cloud(1, 10)
    rec = pycolmap.Reconstruction()
    for p, c in zip(xyz, rgb, strict=True):
        rec.add_point3D(p, pycolmap.Track(), c)
    (tmp_path / "txt").mkdir()
    (tmp_path / "bin").mkdir()
    rec.write_text(tmp_path / "txt")
    rec.write_binary(tmp_path / "bin")
    for name in ("txt/points3D.txt", "bin/points3D.bin"):
        got_xyz, got_rgb = colmap_io.read_points3d(tmp_path / name)
        assert np.allclose(got_xyz, xyz) and np.array_equal(got_rgb, rgb)


def test_bad_model_files_are_named(tmp_path):
    xyz, rgb = _cloud(2, 5)
    write_points_binary(tmp_path / "points3D.bin", xyz, rgb)
    data = (tmp_path / "points3D.bin").read_bytes()
    (tmp_path / "points3D.bin").write_bytes(data[:-5])
    with pytest.raises(GeolinkError, match="points3D.bin is not a COLMAP points3D.bin"):
        colmap_io.read_points3d(tmp_path / "points3D.bin")
    write_points_text(tmp_path / "points3D.txt", xyz, rgb)
    text = (tmp_path / "points3D.txt").read_text().replace(f" {rgb[1][0]} ", " red ", 1)
    (tmp_path / "points3D.txt").write_text(text)
    with pytest.raises(GeolinkError, match="points3D.txt:4: expected 'POINT3D_ID X Y Z R G B ERROR"):
        colmap_io.read_points3d(tmp_path / "points3D.txt")
    with pytest.raises(GeolinkError, match="no points3D.bin or points3D.txt under"):
        colmap_io.find_points3d(tmp_path / "nothing")


# --- the stage: resumable, failures listed, outliers dropped -----------------------------------


def _models(tmp_path):
    models = tmp_path / "models"
    xyz, rgb = _cloud(3)
    xyz[0] = [1e5, 1e5, 1e5]  # a wild SfM point
    write_points_text(models / "0001" / "sparse" / "points3D.txt", xyz, rgb)
    write_points_binary(models / "0002" / "points3D.bin", *_cloud(4))
    (models / "0003" / "sparse" / "0").mkdir(parents=True)
    (models / "0003" / "sparse" / "0" / "points3D.bin").write_bytes(b"\x01")
    return models


def test_colmap_model_backend_resumes_and_lists_failures(tmp_path, capsys):
    models, data = _models(tmp_path), tmp_path / "data"
    data.mkdir()
    conf = {**CONFS["colmap-model"], "model_dir": models}
    out = main(conf, data, n_points=128, progress=False)
    assert out == data / "pointclouds"
    report = json.loads((out / REPORT).read_text())["locations"]
    assert report["0001"]["status"] == "done" and report["0001"]["points_found"] == 299  # outlier dropped
    assert report["0003"]["status"] == "failed" and "not a COLMAP points3D.bin" in report["0003"]["error"]
    assert "failed 0003" in capsys.readouterr().err
    cloud = pointclouds.load(out / "0001.npz")
    assert cloud.shape == (128, 3) and np.allclose(cloud.mean(0), 0, atol=1e-5)
    assert np.isclose(np.linalg.norm(cloud, axis=1).max(), 1.0) and cloud.std() > 0.3  # not squashed
    stamp = (out / "0002.npz").stat().st_mtime_ns
    main(conf, data, n_points=128, progress=False)  # resumes: only the failed one is tried again
    assert (out / "0002.npz").stat().st_mtime_ns == stamp
    main(conf, data, n_points=64, force=True, progress=False)
    assert pointclouds.load(out / "0002.npz").shape == (64, 3)


def test_all_locations_failing_is_exit_2_with_one_line(tmp_path, capsys):
    models = tmp_path / "models"
    (models / "0001").mkdir(parents=True)
    (models / "0001" / "points3D.txt").write_text("1 2 3\n")
    (tmp_path / "data").mkdir()
    args = ["reconstruct", str(tmp_path / "data"), "--backend", "colmap-model", "--model-dir", str(models)]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        last.startswith("error: all 1 locations failed (first: 0001: GeolinkError:")
        and "points3D.txt:1" in last
    )
    assert not (tmp_path / "data" / "pointclouds" / "0001.npz").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--backend", "vggt"], "error: vggt is not available"),
        (["--backend", "dsm"], "error: --backend dsm needs a synthetic dataset"),
        (["--backend", "nerf"], "error: unknown reconstruction backend 'nerf'"),
        (["--backend", "colmap", "--points", "-5"], "error: --points must be between 16 and 1000000"),
        (["--backend", "colmap-model"], "error: --backend colmap-model needs --model-dir"),
    ],
)
def test_cli_refuses_bad_options_in_one_line(tmp_path, capsys, extra, message):
    root = write_university1652(tmp_path / "ds", drone_per_id=1)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["reconstruct", str(root), *extra])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err.startswith(message) and "\n" not in err


# --- real SfM on a synthetic location, checked against the true surface -------------------------


def _umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising Σ‖s·R·src + t − dst‖² (Umeyama 1991)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a / len(src))
    d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ d @ vt
    scale = float(np.trace(np.diag(sig) @ d) / (a**2).sum(1).mean())
    return scale, rot, mu_d - scale * rot @ mu_s


def test_umeyama_recovers_a_known_similarity():
    src = np.random.default_rng(0).normal(size=(20, 3))
    angle = 0.7
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    scale, got_rot, shift = _umeyama(src, 3.5 * src @ rot.T + [1.0, -2.0, 5.0])
    assert np.isclose(scale, 3.5) and np.allclose(got_rot, rot) and np.allclose(shift, [1, -2, 5])


@pytest.fixture(scope="module")
def synthetic_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "world"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(
            [
                "synth",
                str(root),
                "--locations",
                "2",
                "--views",
                "12",
                "--size",
                "256",
                "--seed",
                "3",
                "--styles",
                "suburb,dense_city",
            ]
        )
    assert exit_info.value.code == 0
    return root


def _true_surface(root, location: str, cameras: list[dict]) -> np.ndarray:
    """Area-CRS points of the DSM that the location's cameras see (the generator's own ray caster)."""
    from geolink_edge.data.synthetic.georef import read_geotiff
    from geolink_edge.data.synthetic.render import Camera, Surface, cast

    with (root / "locations.csv").open() as f:
        area = next(row["area"] for row in csv.DictReader(f) if row["location_id"] == location)
    dsm, grid = read_geotiff(root / "areas" / area / "dsm.tif")
    surface = Surface(grid, dsm.astype(np.float32))
    return np.concatenate([cast(surface, Camera.from_json(r)).crs_points(grid) for r in cameras])


def _nearest_distance(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    origin = reference.mean(0)  # UTM coordinates lose decimetres in float32 unless made local
    index = faiss.IndexFlatL2(3)
    index.add(np.ascontiguousarray(reference - origin, dtype=np.float32))
    squared, _ = index.search(np.ascontiguousarray(queries - origin, dtype=np.float32), 1)
    return np.sqrt(squared[:, 0])


@pytest.mark.slow
def test_colmap_reconstructs_a_synthetic_location_within_two_metres(synthetic_world, tmp_path):
    data = open_dataset(synthetic_world)
    location = sorted(data.train_drone)[0]
    views = data.train_drone[location]
    cameras = {Path(r["file"]).name: r for r in json.loads((views[0].parent / "cameras.json").read_text())}
    rec = sfm.sparse_reconstruction(views, tmp_path / "sfm")
    assert rec.num_reg_images() >= 0.75 * len(views) and rec.num_points3D() >= 200
    registered = list(rec.images.values())
    src = np.array([img.projection_center() for img in registered])
    dst = np.array([cameras[views[int(img.name[:4])].name]["C"] for img in registered])
    scale, rot, shift = _umeyama(src, dst)
    assert np.median(np.linalg.norm(scale * src @ rot.T + shift - dst, axis=1)) < 2.0  # metres
    points = np.array([p.xyz for p in rec.points3D.values()])
    aligned = scale * points @ rot.T + shift
    error = _nearest_distance(aligned, _true_surface(synthetic_world, location, list(cameras.values())))
    assert np.median(error) < MEDIAN_ERROR_BOUND_M


@pytest.mark.slow
def test_reconstruct_stage_with_dsm_and_colmap(synthetic_world, tmp_path):
    data = open_dataset(synthetic_world)
    out = main(CONFS["dsm"], synthetic_world, out_dir=tmp_path / "dsm", n_points=256, progress=False)
    done = sorted(p.stem for p in out.glob("*.npz"))
    assert done == sorted(data.drone_views())
    cloud = pointclouds.load(out / f"{done[0]}.npz")
    assert cloud.shape == (256, 3) and np.isclose(np.linalg.norm(cloud, axis=1).max(), 1.0, atol=1e-5)
    first = sorted(data.train_drone)[0]
    subset = tmp_path / "one"  # the colmap stage on one location, through the same entry
    conf = {**CONFS["colmap"], "max_images": 12}
    main(conf, synthetic_world, out_dir=subset, n_points=128, progress=False, only=[first])
    assert pointclouds.load(subset / f"{first}.npz").shape == (128, 3)
