"""ONNX export of the 2D encoder: numerics against torch, graph properties, metadata."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from geolink_edge.backends import CARD_KEY, PRECISION_KEY, load_embedder
from geolink_edge.card import ModelCard
from geolink_edge.errors import GeolinkError
from geolink_edge.export.onnx_export import export_onnx
from geolink_edge.models import read_checkpoint


@pytest.fixture(scope="module")
def session(tiny_onnx):
    return ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("batch", [1, 3])
def test_onnx_matches_torch(tiny_onnx, tiny_encoder, session, batch):
    card = tiny_encoder.model_card()  # the checkpoint behind tiny_onnx holds these weights
    images = torch.randn(batch, 3, *card.image_size, generator=torch.Generator().manual_seed(batch))
    got = session.run(None, {"images": images.numpy()})[0]
    with torch.no_grad():
        want = tiny_encoder(images).numpy()
    assert got.shape == (batch, card.descriptor_dim)
    assert np.abs(np.linalg.norm(got, axis=1) - 1).max() < 1e-5
    assert (got * want).sum(axis=1).min() >= 0.9999


def test_graph_is_static_size_dynamic_batch_opset17(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("images", "descriptors")
    dims = [d.dim_value or d.dim_param for d in inp.type.tensor_type.shape.dim]
    assert dims[1:] == [3, 112, 112] and isinstance(dims[0], str)
    ops = [n.op_type for n in model.graph.node]
    # 12 blocks x 2 norms + final norm + 2 MixVPR mixers, each a single fused op.
    assert ops.count("LayerNormalization") == 27
    assert "ReduceMean" not in ops


def test_metadata_carries_card_and_precision(tiny_onnx, tiny_checkpoint):
    meta = {p.key: p.value for p in onnx.load(str(tiny_onnx)).metadata_props}
    card = ModelCard.from_dict(read_checkpoint(tiny_checkpoint)["model_card"])
    assert meta[PRECISION_KEY] == "fp32"
    embedder = load_embedder(tiny_onnx)
    assert embedder.card.weights_hash == card.weights_hash and CARD_KEY in meta
    frame = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    assert embedder.embed([frame, frame]).shape == (2, 256)


def test_old_opset_is_refused_and_nothing_written(tiny_encoder, tmp_path):
    with pytest.raises(GeolinkError, match="opset 13"):
        export_onnx(tiny_encoder, tmp_path / "old.onnx", opset=13)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_backend_embeds_like_the_onnx_export(tiny_checkpoint, tiny_onnx, tmp_path):
    """The ``.pt`` runtime backend: same card and, on real BGR frames, the ONNX backend's descriptors."""
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, (90 + 10 * k, 120, 3), np.uint8) for k in range(3)]
    torch_embedder, onnx_embedder = load_embedder(tiny_checkpoint), load_embedder(tiny_onnx)
    assert torch_embedder.card == onnx_embedder.card and torch_embedder.backend.name == "torch[cpu]"
    got, want = torch_embedder.embed(frames), onnx_embedder.embed(frames)
    assert got.shape == want.shape == (3, torch_embedder.card.descriptor_dim)
    np.testing.assert_allclose(got, want, atol=2e-5)
    assert np.linalg.norm(got - got[::-1], axis=1).max() > 0.01  # different frames, different descriptors
    torch.save({"state_dict": {"w": torch.zeros(2)}}, tmp_path / "weights.pt")
    with pytest.raises(GeolinkError, match="not a geolink-edge checkpoint") as refused:
        load_embedder(tmp_path / "weights.pt")
    assert "\n" not in str(refused.value)
