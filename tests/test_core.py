"""The shared core: model card, geodesy, atomic writes, the CLI shell, runtime layering."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from geolink_edge import atomic
from geolink_edge.card import ModelCard, check_same_model, hash_state_dict
from geolink_edge.errors import GeolinkError, describe, first_line
from geolink_edge.geo import LocalFrame, haversine_m, utm_epsg
from geolink_edge.preprocess import preprocess


def _card(**kw) -> ModelCard:
    return ModelCard(backbone="vit_tiny", image_size=(32, 48), feature_dim=8, feature_size=(2, 3), **kw)


def test_card_round_trip_and_descriptor_dim():
    card = _card(weights_hash="ab" * 32)
    again = ModelCard.from_json(card.to_json())
    assert again == card
    assert json.loads(card.to_json())["descriptor_dim"] == 1024 * 4


def test_card_rejects_unknown_field_in_one_line():
    with pytest.raises(GeolinkError, match="invalid model card"):
        ModelCard.from_dict({**_card().to_dict(), "surprise": 1})


def test_hash_is_order_independent_and_value_sensitive():
    a = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.zeros(3, np.float32)}
    b = {"b": a["b"].copy(), "w": a["w"].copy()}
    assert hash_state_dict(a) == hash_state_dict(b)
    b["w"][1, 2] += 1e-3
    assert hash_state_dict(a) != hash_state_dict(b)


def test_model_mismatch_names_both_hashes():
    with pytest.raises(GeolinkError, match="aaaaaaaaaaaa.*bbbbbbbbbbbb"):
        check_same_model("a" * 64, "b" * 64, "the index", "the model")


def test_preprocess_matches_hand_computation():
    card = _card(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    image = np.zeros((64, 96, 3), np.uint8)
    image[..., 2] = 255  # red in BGR
    out = preprocess([image], card)
    assert out.shape == (1, 3, 32, 48)
    assert np.allclose(out[0, 0], (1.0 - 0.5) / 0.25)  # R first
    assert np.allclose(out[0, 2], (0.0 - 0.5) / 0.25)


def test_enu_round_trip_and_distance():
    frame = LocalFrame(47.3769, 8.5417)
    enu = frame.to_enu(47.3869, 8.5517, 12.0)
    lat, lon, h = frame.to_geodetic(*enu)
    assert abs(lat - 47.3869) < 1e-9 and abs(lon - 8.5517) < 1e-9 and abs(h - 12.0) < 1e-4
    planar = float(np.hypot(enu[0], enu[1]))
    assert abs(planar - float(haversine_m(47.3769, 8.5417, 47.3869, 8.5517))) < 3.0  # ~1.3 km apart
    assert abs(float(frame.to_enu(47.3769 + 1e-3, 8.5417)[1]) - 111.2) < 0.5  # 1 mdeg of latitude


def test_utm_zone():
    assert utm_epsg(47.37, 8.54) == 32632 and utm_epsg(-33.9, 18.4) == 32734


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(RuntimeError), atomic.atomic_dir(out) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("crash mid-write")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_atomic_dir_refuses_non_empty_without_force(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(GeolinkError, match="use --force"), atomic.atomic_dir(tmp_path):
        pass


def test_atomic_json_replaces_whole_file(tmp_path):
    path = atomic.write_json(tmp_path / "a.json", {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_cli_info_lists_components(cli):
    result = cli("info")
    assert result.returncode == 0, result.stderr
    for name in ("numpy", "opencv", "faiss", "onnxruntime", "tensorrt", "pymavlink", "cuda devices"):
        assert name in result.stdout


def test_cli_unknown_option_is_one_line_exit_2(cli):
    result = cli("info", "--nope")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr


def test_runtime_imports_without_torch_or_timm():
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['timm'] = None\n"
        "import pkgutil, importlib, geolink_edge.runtime as rt\n"
        "for m in pkgutil.iter_modules(rt.__path__):\n"
        "    importlib.import_module('geolink_edge.runtime.' + m.name)\n"
        "import geolink_edge.cli\n"
        "print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_an_exception_quoted_in_one_line_never_fails_on_an_empty_message():
    assert first_line(ValueError("bad header\nat byte 12")) == "bad header"
    assert first_line(ValueError("")) == "ValueError"
    assert first_line(OSError("  \n  ")) == "OSError"
    assert first_line(ValueError("x" * 500), limit=20) == "x" * 20
    assert describe(KeyError()) == "KeyError"
    assert describe(RuntimeError("engine lost\ntrace")) == "RuntimeError: engine lost"


def test_options_left_to_a_config_parse_as_unset_and_show_its_default():
    """Every option whose default a config owns: None when not given, the config's value in --help."""
    import click
    import typer.main

    from geolink_edge.cli import app
    from geolink_edge.commands.conf_options import ConfDefault
    from geolink_edge.data.synthetic.writer import SynthConfig

    def commands(group):
        for command in group.commands.values():
            yield from commands(command) if hasattr(command, "commands") else [command]

    owned = [
        (command, param)
        for command in commands(typer.main.get_command(app))
        for param in command.params
        if isinstance(param.default, ConfDefault)
    ]
    assert {c.name for c, _ in owned} >= {"synth", "build", "merge", "export", "run", "locate", "runtime"}
    for command, param in owned:
        assert param.get_default(click.Context(command)) is None, (command.name, param.name)
        assert str(param.default) not in ("", "None"), (command.name, param.name)
    synth = next(c for c in commands(typer.main.get_command(app)) if c.name == "synth")
    locations = next(p for p in synth.params if p.name == "locations")
    assert str(locations.default) == str(SynthConfig().locations) == "24"
