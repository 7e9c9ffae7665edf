"""The runtime's settings as YAML: shown with a comment each, read back, checked, overridden."""

from __future__ import annotations

import pytest
import yaml

from geolink_edge.cli import main as cli_main
from geolink_edge.errors import GeolinkError
from geolink_edge.runtime import conf_yaml
from geolink_edge.runtime.loop import RunConf


def test_show_prints_every_default_with_a_comment_and_reads_back_as_them():
    text = conf_yaml.show(RunConf, "defaults")
    assert yaml.safe_load(text) == conf_yaml.to_dict(RunConf())
    keys = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert len(keys) > 70 and all("  # " in line and not line.endswith("# ") for line in keys)
    assert conf_yaml.load(RunConf, None) == RunConf()


def test_the_command_line_wins_over_the_file_and_the_file_over_the_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("width: 640\nnear: [47.1, 8.2, 300]\nlocate: {k_global: 30, verify: {features: orb}}\n")
    conf = conf_yaml.load(RunConf, path, {"width": 800, "locate": {"verify": {"ratio": 0.8}}})
    assert (conf.width, conf.near, conf.locate.k_global) == (800, (47.1, 8.2, 300.0), 30)
    assert (conf.locate.verify.features, conf.locate.verify.ratio) == ("orb", 0.8)
    assert conf.height == RunConf().height and conf.locate.k_track == RunConf().locate.k_track


@pytest.mark.parametrize(
    "text, message",
    [
        ("locate:\n  k_globl: 30\n", "unknown key locate.k_globl (choose from k_global, k_track,"),
        ("filter: {max_misses: many}\n", "filter.max_misses: Input should be a valid integer"),
        ("locate: 3\n", "locate: a mapping of keys expected, got 3"),
        ("width: [1\n", "not YAML"),
        ("- width\n", "a mapping of keys expected at the top"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_key(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(GeolinkError) as err:
        conf_yaml.load(RunConf, path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_run_refuses_an_unknown_key_before_opening_anything(tmp_path, cli):
    path = tmp_path / "run.yaml"
    path.write_text("locate:\n  verify:\n    vote_mm: 3\n")
    options = ("--camera", "x", "--model", "m.onnx", "--index", "idx", "--config", path)
    run = cli("run", *options, block_torch=True)
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert run.stderr.startswith(f"error: {path}: unknown key locate.verify.vote_mm (choose from features,")


def test_config_show_prints_the_yaml_run_reads(cli, capsys):
    shown = cli("config", "show", "run", block_torch=True)  # the runtime's settings need no torch
    assert shown.returncode == 0 and yaml.safe_load(shown.stdout) == conf_yaml.to_dict(RunConf())
    with pytest.raises(SystemExit) as done:
        cli_main(["config", "show", "verify"])
    assert done.value.code == 0
    assert yaml.safe_load(capsys.readouterr().out) == conf_yaml.to_dict(RunConf().locate.verify)
    with pytest.raises(SystemExit) as wrong:
        cli_main(["config", "show", "runn"])
    err = capsys.readouterr().err
    assert wrong.value.code == 2 and "unknown config 'runn' (choose from run, locate" in err
