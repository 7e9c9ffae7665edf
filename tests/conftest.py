"""Shared session fixtures: a seeded tiny encoder, its checkpoint and its ONNX export, the command line."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.fixture(scope="session")
def tiny_encoder():
    """The ``tiny`` preset encoder with seeded random weights, in eval mode (do not train it in place)."""
    import torch

    from geolink_edge.models import ImageEncoder, card_for_preset

    torch.manual_seed(0)
    return ImageEncoder(card_for_preset("tiny")).eval()


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_encoder, tmp_path_factory):
    """A ``geolink-edge/checkpoint/1`` file holding ``tiny_encoder`` (model card + encoder state)."""
    from geolink_edge.models import save_checkpoint

    path = tmp_path_factory.mktemp("tiny_checkpoint") / "tiny.pt"
    payload = {
        "model_card": tiny_encoder.model_card().to_dict(),
        "encoder": tiny_encoder.state_dict(),
        "config": {"model": {"preset": "tiny"}},
        "epoch": 0,
        "step": 0,
        "metrics": {},
    }
    return save_checkpoint(path, payload)


@pytest.fixture(scope="session")
def tiny_onnx(tiny_checkpoint, tmp_path_factory):
    """``encoder.onnx`` (fp32) exported from the encoder stored in ``tiny_checkpoint``."""
    from geolink_edge.export.onnx_export import export_onnx
    from geolink_edge.models import load_encoder

    encoder, _ = load_encoder(tiny_checkpoint)
    return export_onnx(encoder, tmp_path_factory.mktemp("tiny_onnx") / "encoder.onnx")


@pytest.fixture(scope="session")
def u1652_root(tmp_path_factory):
    """A small University-1652 layout: 6 training places, 3 test places and a distractor (read only)."""
    from _dataset_fixtures import write_university1652

    return write_university1652(
        tmp_path_factory.mktemp("u1652") / "u1652",
        train_ids=tuple(f"{i:04d}" for i in range(1, 7)),
        test_ids=("0100", "0101", "0102"),
    )


FLIGHT_FRAMES = 16


@pytest.fixture(scope="session")
def flight_world(tmp_path_factory, tiny_onnx):
    """``(flight, index, model)``: a 16-frame, 2 fps synthetic flight, its index, the tiny ONNX."""
    from _runtime_fixtures import synthetic_flight_world

    return synthetic_flight_world(tmp_path_factory.mktemp("flight_world"), tiny_onnx, FLIGHT_FRAMES)


class Cli:
    """``geolink-edge`` in a fresh Python process, as typed on the command line."""

    def argv(self, *args, block_torch: bool = False) -> list[str]:
        """The process's command line; ``block_torch`` makes torch and timm unimportable in it."""
        prelude = "sys.modules['torch'] = None; sys.modules['timm'] = None\n" if block_torch else ""
        code = "import sys\n" + prelude + "from geolink_edge.cli import main; main(sys.argv[1:])"
        return [sys.executable, "-c", code, *map(str, args)]

    def __call__(self, *args, block_torch: bool = False, timeout: float = 600) -> subprocess.CompletedProcess:
        command = self.argv(*args, block_torch=block_torch)
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def cli() -> Cli:
    """Run ``geolink-edge ARGS`` and get its exit code, stdout and stderr (``cli.argv``: the command)."""
    return Cli()
