"""Dataset readers, sampler, transforms and torch datasets on tiny fixtures in the real layouts."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
import torch
from _dataset_fixtures import (
    SUES_TEST,
    SUES_TRAIN,
    write_denseuav,
    write_image,
    write_sues200,
    write_university1652,
)

from geolink_edge import cli
from geolink_edge.card import ModelCard
from geolink_edge.data import pointclouds
from geolink_edge.data.datasets import open_dataset
from geolink_edge.data.layout import read_image
from geolink_edge.data.sampler import UniqueLocationBatchSampler
from geolink_edge.data.sues200_split import TEST_IDS, TRAIN_IDS
from geolink_edge.data.torch_datasets import MIRROR_X, ImageList, TrainPairs
from geolink_edge.data.transforms import eval_transform, train_transform
from geolink_edge.errors import GeolinkError
from geolink_edge.preprocess import preprocess_one
from geolink_edge.train import evaluate


def _ids(items) -> set[str]:
    return {item.location for item in items}


# --- University-1652 -------------------------------------------------------------------------


def test_university1652_splits_and_distractors(tmp_path):
    data = open_dataset(write_university1652(tmp_path))
    assert data.kind == "university1652"
    assert sorted(data.train_drone) == ["0001", "0002", "0003"]
    assert all(len(v) == 3 for v in data.train_drone.values())
    assert data.train_satellite["0002"] == [tmp_path / "train/satellite/0002/0002.jpg"]
    assert _ids(data.query_drone) == {"0100", "0101"} and len(data.query_drone) == 6
    assert _ids(data.gallery_satellite) - data.test_locations() == {"0900"}  # the distractor
    assert _ids(data.gallery_drone) == {"0100", "0101", "0900"}
    assert data.gps is None and data.pointcloud_dir is None
    assert read_image(data.query_drone[0].path).shape == (24, 32, 3)
    assert len(data.drone_views()["0900"]) == 3


def test_university1652_bad_input_names_the_path(tmp_path):
    root = write_university1652(tmp_path)
    write_image(root / "train/drone/0004/image-01.jpeg", 99)  # a location without satellite image
    with pytest.raises(GeolinkError, match="location 0004 has drone images but no satellite image"):
        open_dataset(root)
    (root / "train/drone/0004/image-01.jpeg").unlink()
    with pytest.raises(GeolinkError, match="no images in .*0004"):
        open_dataset(root)
    (root / "train/drone/0004").rmdir()
    (root / "test/gallery_satellite").rename(root / "test/elsewhere")
    with pytest.raises(GeolinkError, match="missing folder .*gallery_satellite"):
        open_dataset(root)


def test_unreadable_image_is_reported_when_opened(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(GeolinkError, match="cannot read image .*broken.jpg"):
        read_image(bad)


def test_cli_bad_dataset_is_one_line_and_exit_2(tmp_path, capsys):
    root = write_university1652(tmp_path / "ds")
    (root / "train/satellite/0003/0003.jpg").unlink()
    (root / "train/satellite/0003").rmdir()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["reconstruct", str(root), "--backend", "colmap"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert err.startswith("error: location 0003 has drone images but no satellite image") and "\n" not in err


# --- SUES-200 ----------------------------------------------------------------------------------


def test_sues200_official_split_is_120_80():
    assert len(TRAIN_IDS) == 120 and len(TEST_IDS) == 80 and not TRAIN_IDS & TEST_IDS
    assert {"0001", "0002", "0200"} <= TRAIN_IDS and {"0008", "0012", "0195"} <= TEST_IDS


def test_sues200_split_gallery_and_heights(tmp_path):
    root = write_sues200(tmp_path)
    data = open_dataset(root)
    assert data.kind == "sues200"
    assert sorted(data.train_drone) == list(SUES_TRAIN) and len(data.train_drone["0001"]) == 8
    assert _ids(data.query_drone) == set(SUES_TEST)
    assert _ids(data.gallery_satellite) == {*SUES_TRAIN, *SUES_TEST}  # training ids are distractors
    assert _ids(data.query_satellite) == set(SUES_TEST)
    assert {item.height for item in data.query_drone} == {150, 200, 250, 300}
    low = open_dataset(root, heights=[150])
    assert {item.height for item in low.query_drone} == {150} and len(low.query_drone) == 4
    assert all("/150/" in p.as_posix() for p in low.train_drone["0002"])
    with pytest.raises(GeolinkError, match="SUES-200 heights are 150, 200, 250, 300; got \\[120\\]"):
        open_dataset(root, heights=[120])


def test_sues200_missing_height_folder_and_satellite(tmp_path):
    root = write_sues200(tmp_path)
    for image in (root / "drone-view/0008/250").iterdir():
        image.unlink()
    (root / "drone-view/0008/250").rmdir()
    with pytest.raises(GeolinkError, match="missing folder .*0008/250"):
        open_dataset(root)
    assert len(open_dataset(root, heights=[150, 300]).query_drone) == 8
    (root / "satellite-view/0012/0.png").rename(root / "0.png")
    (root / "satellite-view/0012").rmdir()
    with pytest.raises(GeolinkError, match="location 0012 has drone images but no satellite image"):
        open_dataset(root, heights=[150])


# --- DenseUAV ----------------------------------------------------------------------------------


def test_denseuav_gps_heights_and_galleries(tmp_path):
    data = open_dataset(write_denseuav(tmp_path))
    assert data.kind == "denseuav"
    assert data.gps["000000"] == pytest.approx((30.32, 120.38))  # (lat, lon) from "E<lon> N<lat>"
    assert data.gps["002257"] == pytest.approx((30.323, 120.383))
    assert len(data.train_satellite["000001"]) == 6
    assert {item.height for item in data.query_drone} == {80, 90, 100}
    assert _ids(data.gallery_satellite) - data.test_locations() == {"000000", "000001"}
    high = open_dataset(tmp_path, heights=[100])
    assert [p.name for p in high.train_drone["000000"]] == ["H100.JPG"]
    assert {item.path.name for item in high.query_drone} == {"H100.JPG"}


def test_denseuav_positions_are_per_image(tmp_path):
    root = write_denseuav(tmp_path)
    gps = root / "Dense_GPS_ALL.txt"
    # each height of a place at its own position: H80 as written, H90 / H100 2e-4 / 4e-4 deg east
    shifted = []
    for line in gps.read_text().splitlines():
        path, lon, lat, height = line.split()
        east = (float(height) - 80) * 2e-5
        shifted.append(f"{path} E{float(lon[1:]) + east:.8f} {lat} {height}")
    shifted.append("test/gallery_satellite/002256/H80.tif E120.3900 N30.3300 0.0")
    gps.write_text("\n".join(shifted) + "\n")
    data = open_dataset(root)
    by_name = {item.path.name: item.latlon for item in data.query_drone if item.location == "002257"}
    assert by_name["H80.JPG"] == pytest.approx((30.323, 120.383))
    assert by_name["H90.JPG"] == pytest.approx((30.323, 120.3832))
    assert by_name["H100.JPG"] == pytest.approx((30.323, 120.3834))  # not the last line's for all three
    assert data.gps["002257"] == pytest.approx((30.323, 120.3832))  # a place: its images' mean
    tiles = {(i.location, i.path.name): i.latlon for i in data.gallery_satellite}
    assert tiles[("002256", "H80.tif")] == pytest.approx((30.33, 120.39))
    assert tiles[("002256", "H90.tif")] is None  # no line: the place's position is used
    # what SDM and metre errors read: the image's own position, the place's where it has none
    latlon = evaluate._latlon(data.gallery_satellite[:3], data.gps)
    own = [i.latlon or data.gps[i.location] for i in data.gallery_satellite[:3]]
    assert np.allclose(latlon, own)


@pytest.mark.parametrize(
    "line",
    ["train/drone/000000/H80.JPG 120.38 30.32 80", "train/drone/000000/H80.JPG E120.38 Nabc 80", "junk"],
)
def test_denseuav_malformed_gps_line_names_file_and_line(tmp_path, line):
    root = write_denseuav(tmp_path)
    gps = root / "Dense_GPS_ALL.txt"
    lines = gps.read_text().splitlines()
    lines[2] = line
    gps.write_text("\n".join(lines) + "\n")
    with pytest.raises(GeolinkError, match="Dense_GPS_ALL.txt:3: "):
        open_dataset(root)


# --- synthetic ---------------------------------------------------------------------------------


def _synthetic_root(tmp_path):
    root = write_university1652(tmp_path)
    ids = ["0001", "0002", "0003", "0100", "0101", "0900"]
    rows = [f"{loc},{47.0 + i * 1e-3},{8.0 + i * 1e-3}" for i, loc in enumerate(ids)]
    (root / "gps.csv").write_text("location_id,lat,lon\n" + "\n".join(rows) + "\n")
    (root / "dataset.json").write_text(json.dumps({"generator": "geolink-edge synth", "seed": 3}))
    (root / "pointclouds").mkdir()
    rng = np.random.default_rng(0)
    for loc in ("0001", "0002"):
        pointclouds.save(root / "pointclouds" / f"{loc}.npz", pointclouds.normalise(rng.normal(size=(50, 3))))
    return root


def test_synthetic_layout_reads_gps_meta_and_pointclouds(tmp_path):
    data = open_dataset(_synthetic_root(tmp_path))
    assert data.kind == "synthetic" and data.meta["seed"] == 3
    assert data.gps["0101"] == pytest.approx((47.004, 8.004))
    assert data.pointcloud_dir == tmp_path / "pointclouds"


def test_synthetic_gps_errors_name_line_and_location(tmp_path):
    root = _synthetic_root(tmp_path)
    gps = root / "gps.csv"
    text = gps.read_text()
    gps.write_text(text.replace("0002,47.001", "0002,north"))
    with pytest.raises(GeolinkError, match="gps.csv:3: latitude/longitude are not numbers"):
        open_dataset(root)
    gps.write_text("\n".join(line for line in text.splitlines() if not line.startswith("0900")) + "\n")
    with pytest.raises(GeolinkError, match="no row for location\\(s\\) 0900"):
        open_dataset(root)


# --- sampler -----------------------------------------------------------------------------------


def test_sampler_never_repeats_a_location_and_shards_for_ddp():
    labels = np.random.default_rng(1).integers(0, 20, 500)
    shards = [list(UniqueLocationBatchSampler(labels, 8, seed=5, rank=r, world_size=3)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == len(
        UniqueLocationBatchSampler(labels, 8, seed=5, rank=1, world_size=3)
    )
    flat = [i for shard in shards for batch in shard for i in batch]
    assert len(flat) == len(set(flat))  # disjoint shards, every item at most once per epoch
    assert len(flat) >= 500 - 8 * 3 * 2  # and hardly anything is left out
    assert all(len(b) == 8 and len(set(labels[b])) == 8 for shard in shards for b in shard)


def test_sampler_epochs_are_reproducible_and_differ():
    labels = np.repeat(np.arange(10), 4)
    sampler = UniqueLocationBatchSampler(labels, 4, seed=0)
    first = list(sampler)
    assert first == list(UniqueLocationBatchSampler(labels, 4, seed=0))
    sampler.set_epoch(1)
    assert list(sampler) != first and sum(map(len, sampler)) == 40
    with pytest.raises(GeolinkError, match="needs 16 distinct locations; the dataset has 10"):
        UniqueLocationBatchSampler(labels, 16)


# --- transforms and torch datasets -------------------------------------------------------------


def _card() -> ModelCard:
    return ModelCard(backbone="x", image_size=(20, 28), feature_dim=8, feature_size=(2, 2))


def test_eval_transform_equals_runtime_preprocess():
    bgr = np.random.default_rng(2).integers(0, 256, (61, 47, 3), dtype=np.uint8)
    card = _card()
    ours = eval_transform(card.image_size, card.mean, card.std)(image=np.ascontiguousarray(bgr[..., ::-1]))
    assert np.abs(ours["image"].transpose(2, 0, 1) - preprocess_one(bgr, card)).max() < 1e-5


def test_train_transform_keeps_shape_and_is_seeded():
    rgb = np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    tf = train_transform((20, 28), "satellite")
    outs = []
    for seed in (7, 7, 8):
        tf.set_random_seed(seed)
        outs.append(tf(image=rgb)["image"])
    assert outs[0].shape == (20, 28, 3) and outs[0].dtype == np.float32
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])


def test_train_pairs_items_and_missing_pointclouds(tmp_path):
    data = open_dataset(_synthetic_root(tmp_path))
    with pytest.raises(GeolinkError, match="1 of 3 training locations have no point cloud .*first: 0003"):
        TrainPairs(data, (16, 16), n_points=64)
    pairs = TrainPairs(data, (16, 16), n_points=64, require_pointclouds=False, seed=1)
    assert len(pairs) == 9 and pairs.labels == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    item = pairs[4]
    assert item["label"] == 1 and item["has_points"]
    for key in ("drone", "drone2", "satellite", "satellite2"):
        assert item[key].shape == (3, 16, 16) and item[key].dtype == torch.float32
    assert not torch.equal(item["satellite"], item["satellite2"])
    assert item["points"].shape == (64, 3) and not torch.equal(item["points"], item["points2"])
    assert item["points"].abs().max() < 1.1  # unit ball + jitter
    last = pairs[8]
    assert not last["has_points"] and not last["points"].any()
    again = TrainPairs(data, (16, 16), n_points=64, require_pointclouds=False, seed=1)[4]
    assert torch.equal(again["drone2"], item["drone2"]) and torch.equal(again["points"], item["points"])
    batch = torch.utils.data.default_collate([pairs[0], last])
    assert batch["has_points"].tolist() == [True, False]


def test_train_pairs_flip_drone_and_tile_together(tmp_path):
    data = open_dataset(_synthetic_root(tmp_path))
    pairs = TrainPairs(data, (16, 16), n_points=8, require_pointclouds=False, second_views=False)
    assert set(pairs[0]) == {"drone", "satellite", "points", "has_points", "label"}
    # the drone images and the tiles as they are on disk, resized like the items, to tell a mirror
    same = eval_transform((16, 16))
    pairs.drone_tf = pairs.satellite_tf = same

    def looks(path) -> tuple[torch.Tensor, torch.Tensor]:
        rgb = cv2.cvtColor(read_image(path), cv2.COLOR_BGR2RGB)
        return tuple(
            torch.from_numpy(same(image=im)["image"].transpose(2, 0, 1)) for im in (rgb, rgb[:, ::-1])
        )

    mirrored = []
    for index, (label, path) in enumerate(pairs.items):
        item = pairs[index]
        location = pairs.locations[label]
        drone_plain, drone_mirror = looks(path)
        sat_plain, sat_mirror = looks(data.train_satellite[location][0])
        flags = {torch.allclose(item["drone"], drone_mirror), torch.allclose(item["satellite"], sat_mirror)}
        assert len(flags) == 1  # both mirrored or neither
        assert torch.allclose(item["drone"], drone_mirror if flags == {True} else drone_plain)
        mirrored.append(flags == {True})
        if item["has_points"]:  # each drawn point is a stored one (+ jitter), mirrored with the images
            stored = torch.from_numpy(pointclouds.load(pairs.pointcloud_paths[location]))
            gap = {
                m: torch.cdist(item["points"], stored * (MIRROR_X if m else 1)).min(1).values.max()
                for m in (0, 1)
            }
            assert gap[flags == {True}] < 0.05 < gap[flags != {True}]
    assert 0 < sum(mirrored) < len(mirrored)


def test_train_pairs_reports_an_unreadable_image(tmp_path):
    data = open_dataset(_synthetic_root(tmp_path))
    data.train_drone["0001"][0].write_bytes(b"garbage")
    pairs = TrainPairs(data, (16, 16), n_points=8, require_pointclouds=False)
    with pytest.raises(GeolinkError, match="cannot read image .*0001/image-01.jpeg"):
        pairs[0]


def test_image_list_uses_runtime_preprocess(tmp_path):
    data = open_dataset(write_university1652(tmp_path))
    card = _card()
    images = ImageList(data.gallery_satellite, card)
    item = images[1]
    assert item["index"] == 1
    expected = preprocess_one(read_image(data.gallery_satellite[1].path), card)
    assert np.array_equal(item["image"].numpy(), expected)


# --- point-cloud files -------------------------------------------------------------------------


def test_normalise_and_farthest_point_sampling():
    line = np.stack([np.arange(11.0), np.zeros(11), np.zeros(11)], axis=1)
    first, second = pointclouds.farthest_point_sample(line, 2, seed=4)
    assert second == (0 if first > 5 else 10)  # the end farther from the start
    cloud = np.random.default_rng(5).normal(size=(200, 3))
    order = pointclouds.farthest_point_sample(cloud, 12, seed=1)
    dist = np.linalg.norm(cloud[:, None] - cloud[None, order], axis=2)
    for i in range(1, 12):  # each pick is the point farthest from those picked before it
        assert np.isclose(dist[order[i], :i].min(), dist[:, :i].min(axis=1).max())
    cloud = pointclouds.normalise(line + 5.0)
    assert np.allclose(cloud.mean(axis=0), 0, atol=1e-6)
    assert np.isclose(np.linalg.norm(cloud, axis=1).max(), 1)
    xyz, rgb = pointclouds.prepare(line, 4, rgb=np.repeat(np.arange(11), 3).reshape(11, 3))
    assert xyz.shape == (4, 3) and rgb.shape == (4, 3)
    assert np.array_equal(np.argsort(rgb[:, 0]), np.argsort(xyz[:, 0]))  # colours follow their points


def test_pointcloud_files_round_trip_and_refuse_bad_content(tmp_path):
    xyz = pointclouds.normalise(np.random.default_rng(0).normal(size=(30, 3)))
    path = pointclouds.save(tmp_path / "a.npz", xyz, rgb=np.zeros((30, 3)))
    assert np.array_equal(pointclouds.load(path), xyz)
    buffer = io.BytesIO()
    np.savez(buffer, xyz=np.array([{"evil": 1}], dtype=object))
    (tmp_path / "pickled.npz").write_bytes(buffer.getvalue())
    with pytest.raises(GeolinkError, match="cannot read point cloud .*pickled.npz"):
        pointclouds.load(tmp_path / "pickled.npz")
    np.savez(tmp_path / "flat.npz", xyz=np.zeros(6, np.float32))
    with pytest.raises(GeolinkError, match="flat.npz: 'xyz' must be finite \\(N, 3\\)"):
        pointclouds.load(tmp_path / "flat.npz")
    np.savez(tmp_path / "other.npz", points=np.zeros((3, 3)))
    with pytest.raises(GeolinkError, match="has no 'xyz' array \\(found points\\)"):
        pointclouds.load(tmp_path / "other.npz")
