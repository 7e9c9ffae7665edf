"""Local features and matchers by name: the registries, each extractor on a synthetic pair."""

from __future__ import annotations

import math
import subprocess
import sys

import cv2
import numpy as np
import pytest
from _runtime_fixtures import ortho_affine, render_view, textured_ground

from geolink_edge.cli import main as cli_main
from geolink_edge.errors import GeolinkError
from geolink_edge.runtime.verify import Features, Verifier, VerifyConf

K = np.array([[520.0, 0.0, 320.0], [0.0, 520.0, 240.0], [0.0, 0.0, 1.0]])
GSD, X0, Y0 = 0.25, 1000.0, 2000.0
HAS_AKAZE = hasattr(cv2, "AKAZE_create") or hasattr(getattr(cv2, "xfeatures2d", None), "AKAZE_create")


@pytest.fixture(scope="module")
def pair():
    """A 800-px map and a nadir view of it turned 35° (the homography maps frame → map pixels)."""
    ortho = textured_ground(800)
    frame = render_view(ortho, ortho_affine(GSD, X0, Y0), K, (X0 + 100, Y0 - 100, 90.0), 35.0, 90.0)
    return ortho, frame


def _centre_error_m(homography: np.ndarray) -> float:
    """Metres between where the homography puts the frame centre and the point below the camera."""
    u, v, w = homography @ np.array([320.0, 240.0, 1.0])
    return math.hypot(GSD * u / w - 100.0, -GSD * v / w + 100.0)


@pytest.mark.parametrize(
    "conf, message",
    [
        (
            VerifyConf(features="surf"),
            "unknown local features 'surf' (choose from akaze, aliked, disk, orb, sift, xfeat",
        ),
        (
            VerifyConf(matcher="superglue"),
            "unknown matcher 'superglue' (choose from lighterglue, lightglue, nn)",
        ),
    ],
)
def test_unknown_names_list_the_choices(conf, message):
    with pytest.raises(GeolinkError) as err:
        Verifier(conf)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "option, message",
    [
        ("--features surf", "unknown local features 'surf'"),
        ("--matcher glue", "unknown matcher 'glue'"),
        ("--rotations 3", "rotations must be 1, 2, 4 or auto, got 3"),
    ],
)
@pytest.mark.parametrize("command", ["locate img.png", "run --camera img.png", "bench runtime --camera x"])
def test_cli_refuses_an_unknown_name_in_one_line(command, option, message, capsys):
    """The names are checked before the model or the index is opened (neither exists here)."""
    with pytest.raises(SystemExit) as exit_info:
        cli_main([*command.split(), "--model", "m.onnx", "--index", "idx", *option.split()])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err


@pytest.mark.parametrize(
    "name",
    [
        "sift",
        "orb",
        pytest.param(
            "akaze", marks=pytest.mark.skipif(not HAS_AKAZE, reason="this OpenCV build has no AKAZE")
        ),
    ],
)
def test_classical_extractor_and_its_matcher_recover_the_view(pair, name):
    ortho, frame = pair
    verifier = Verifier(VerifyConf(features=name))
    assert verifier.matcher.name == "nn"
    tile = verifier.tile_features("map", lambda _: ortho)
    result = verifier.verify(7, verifier.features(frame), tile)
    assert result.ok, result.reason
    assert result.inliers >= 40 and _centre_error_m(result.homography) < 1.0


def test_akaze_without_opencv_support_is_a_one_line_error():
    if HAS_AKAZE:
        pytest.skip("this OpenCV build has AKAZE")
    with pytest.raises(GeolinkError, match="has no AKAZE"):
        Verifier(VerifyConf(features="akaze"))


def test_features_respect_the_mask_and_report_original_pixels(pair):
    ortho, _ = pair
    verifier = Verifier(VerifyConf(max_side=400))  # the 800-px map is detected at half size
    mask = np.zeros(ortho.shape[:2], np.uint8)
    mask[:, 400:] = 255  # only the right half holds imagery
    features = verifier.features(ortho, mask)
    assert len(features.xy) > 100 and features.size == (800, 800)
    assert features.xy[:, 0].min() >= 398 and features.xy[:, 0].max() > 700  # original pixels


def test_tile_features_are_cached_by_key(pair):
    ortho, _ = pair
    verifier = Verifier(tile_cache=1)
    loads = []

    def load(key):
        loads.append(key)
        return ortho

    first = verifier.tile_features(("map", 3), load)
    assert verifier.tile_features(("map", 3), load) is first and loads == [("map", 3)]
    verifier.tile_features(("map", 4), load)  # evicts ("map", 3)
    verifier.tile_features(("map", 3), load)
    assert loads == [("map", 3), ("map", 4), ("map", 3)]


def test_match_names_why_there_are_too_few(pair):
    ortho, _ = pair
    verifier = Verifier()
    tile = verifier.features(ortho)
    blank = verifier.features(np.full((480, 640, 3), 127, np.uint8))
    assert verifier.match(blank, tile) == "too few keypoints"
    few = Features(tile.xy[:6], tile.descriptors[:6], tile.size)  # six keypoints: at most six matches
    assert verifier.match(few, tile) == "too few matches (6)"


def test_learned_names_without_torch_say_what_to_install():
    """The registries import with torch absent; choosing a learned extractor then is a one-line error."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from geolink_edge.errors import GeolinkError\n"
        "from geolink_edge.runtime.verify import Verifier, VerifyConf\n"
        "import geolink_edge.runtime.features.disk, geolink_edge.runtime.matchers.lightglue\n"
        "try:\n    Verifier(VerifyConf(features='disk'))\nexcept GeolinkError as exc:\n    print(exc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "torch is not available" in result.stdout and "geolink-edge[match]" in result.stdout


@pytest.mark.parametrize("length, tile", [(320, 320), (200, 320), (321, 320), (900, 320), (1500, 640)])
def test_tiles_cover_the_image_and_their_cores_split_it(length, tile):
    """An exported extractor's tiles: each within the image, neighbours overlapping by a quarter tile
    or more, and the cores (where each keeps its keypoints) a partition of the image away from tile edges."""
    from geolink_edge.runtime.features.learned import _cores

    overlap = tile // 4
    origins, cores = _cores(length, tile, overlap)
    assert origins[0] == 0 and all(0 <= o <= max(length - tile, 0) for o in origins)
    assert origins[-1] + tile >= length
    assert all(b - a <= tile - overlap for a, b in zip(origins, origins[1:], strict=False))
    assert cores[0][0] == 0 and cores[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(cores, cores[1:], strict=False))
    for origin, (lo, hi) in zip(origins, cores, strict=True):
        assert lo == 0 or lo >= origin + overlap / 2
        assert hi == length or hi <= origin + tile - overlap / 2


def test_aligned_sift_matches_keep_orientation_and_size(pair):
    """Aligned (north-up, one GSD): a crop of the map finds more of its true matches than through
    the ratio test; the crop turned 90° (a view whose heading is wrong) finds almost none, where the
    ratio test, rotation-invariant like SIFT, still finds it."""
    ortho, _ = pair
    verifier = Verifier()
    tile = verifier.tile_features("map", lambda _: ortho)
    crop = np.ascontiguousarray(ortho[200:500, 300:650])
    width = crop.shape[1]

    def true_matches(image, to_map, aligned):
        features = verifier.features(image)
        q, t = verifier.match(features, tile, aligned)
        return int(np.sum(np.linalg.norm(tile.xy[t] - to_map(features.xy[q]), axis=1) < 1.0))

    shift = lambda xy: xy + (300, 200)  # noqa: E731
    assert true_matches(crop, shift, True) > true_matches(crop, shift, False) >= 200
    turned = np.ascontiguousarray(np.rot90(crop))
    unturn = lambda xy: np.c_[width - 1 - xy[:, 1], xy[:, 0]] + (300, 200)  # noqa: E731
    assert true_matches(turned, unturn, False) >= 100
    assert true_matches(turned, unturn, True) < 10
