"""The networks: presets, MixVPR, the image encoder, checkpoints, Point-NN, MME and vCLUB."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.data import resolve_model_data_config

from geolink_edge.card import MixVPRConfig, ModelCard, hash_state_dict
from geolink_edge.errors import GeolinkError
from geolink_edge.losses import GeoLinkLoss
from geolink_edge.models import (
    ImageEncoder,
    MixVPR,
    card_for_backbone,
    card_for_preset,
    load_encoder,
    read_checkpoint,
    save_checkpoint,
)
from geolink_edge.models.club import CLUBEstimator
from geolink_edge.models.mme import MixtureOfExperts
from geolink_edge.models.pointnn import PointNN, farthest_point_sample, trig_encoding


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- presets and MixVPR -------------------------------------------------------------------------


def test_paper_preset_card():
    card = card_for_preset("geolink")
    assert card.backbone == "vit_base_patch14_dinov2" and card.image_size == (448, 448)
    assert (card.feature_dim, card.feature_size) == (768, (32, 32))
    assert card.descriptor_dim == 4096 and card.to_dict()["descriptor_dim"] == 4096
    assert (card.aggregator.mix_depth, card.aggregator.mlp_ratio) == (2, 1.0)


def test_unknown_preset_is_one_line_error():
    with pytest.raises(GeolinkError, match="unknown model preset 'huge'.*geolink, tiny"):
        card_for_preset("huge")


def test_card_of_any_timm_backbone_comes_from_timm():
    small = MixVPRConfig(out_channels=8, out_rows=2)
    card = card_for_backbone("resnet18", (72, 72), small)
    timm_config = resolve_model_data_config(timm.create_model("resnet18"))
    assert (card.mean, card.std) == (timm_config["mean"], timm_config["std"])
    # each stride's padding rounds up: 72 px gives a 3x3 map at stride 32, not 72 // 32
    assert (card.feature_dim, card.feature_size) == (512, (3, 3))
    assert ImageEncoder(card)(torch.randn(2, 3, 72, 72, generator=_seeded(4))).shape == (2, 16)
    assert card_for_backbone("resnet18").image_size == (224, 224)  # timm's input size when none is asked
    with pytest.raises(GeolinkError, match="unknown timm backbone 'no_such_net'"):
        card_for_backbone("no_such_net")


def test_preset_cards_come_from_timm_and_take_another_backbone():
    tiny = card_for_preset("tiny")
    assert (tiny.mean, tiny.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # vit_tiny's own, not ImageNet's
    assert (tiny.feature_dim, tiny.feature_size) == (192, (7, 7))
    other = card_for_preset("tiny", backbone="resnet18")
    assert (other.backbone, other.image_size, other.aggregator) == ("resnet18", (112, 112), tiny.aggregator)
    assert (other.feature_dim, other.feature_size, other.mean) == (512, (4, 4), (0.485, 0.456, 0.406))


def test_mixvpr_paper_config_gives_unit_4096d():
    agg = card_for_preset("geolink").aggregator
    mixvpr = MixVPR(768, (32, 32), agg.out_channels, agg.out_rows, agg.mix_depth, agg.mlp_ratio)
    out = mixvpr(torch.randn(2, 768, 32, 32, generator=_seeded(0)))
    assert out.shape == (2, 4096)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    # two 1024->1024 mixers, 768->1024 channel and 1024->4 row projections
    mixer = 2 * 1024 + 2 * (1024 * 1024 + 1024)
    assert sum(p.numel() for p in mixvpr.parameters()) == 2 * mixer + 768 * 1024 + 1024 + 1024 * 4 + 4


def test_mixvpr_without_mixers_is_two_projections():
    mixvpr = MixVPR(3, (2, 2), out_channels=2, out_rows=1, mix_depth=0)
    with torch.no_grad():
        mixvpr.channel_proj.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 0, 1]]))
        mixvpr.row_proj.weight.fill_(1.0)
    fmap = torch.arange(12.0).reshape(1, 3, 2, 2)  # channel sums 6, 22, 38
    expected = torch.tensor([6.0, 38.0]) / math.hypot(6, 38)
    assert torch.allclose(mixvpr(fmap)[0], expected)


# --- image encoder ------------------------------------------------------------------------------


def test_tiny_encoder_drops_class_token_and_normalises(tiny_encoder):
    images = torch.randn(2, 3, 112, 112, generator=_seeded(1))
    with torch.no_grad():
        fmap = tiny_encoder.feature_map(images)
        tokens = tiny_encoder.backbone.forward_features(images)
        out = tiny_encoder(images)
    assert fmap.shape == (2, 192, 7, 7) and tokens.shape == (2, 50, 192)
    assert torch.equal(fmap[:, :, 1, 2], tokens[:, 1 + 1 * 7 + 2])  # token 0 is the class token
    assert out.shape == (2, 256) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)


def test_card_that_does_not_match_the_backbone_is_refused():
    card = card_for_preset("tiny").model_copy(update={"feature_size": (8, 8)})
    with pytest.raises(GeolinkError, match="7x7x192 map.*8x8x192"):
        ImageEncoder(card)


def test_freeze_blocks():
    encoder = ImageEncoder(card_for_preset("tiny"), freeze_blocks=8)
    frozen = {n for n, p in encoder.named_parameters() if not p.requires_grad}
    assert "backbone.blocks.7.mlp.fc2.weight" in frozen and "backbone.pos_embed" in frozen
    assert "backbone.blocks.8.mlp.fc2.weight" not in frozen and "aggregator.row_proj.weight" not in frozen
    assert len({n.split(".")[2] for n in frozen if n.startswith("backbone.blocks.")}) == 8
    with pytest.raises(GeolinkError, match="cannot freeze 13 blocks.*has 12"):
        ImageEncoder(card_for_preset("tiny"), freeze_blocks=13)


def test_freeze_counts_the_stages_of_a_convnet_and_refuses_a_backbone_without_blocks():
    small = MixVPRConfig(out_channels=8, out_rows=2)
    card = card_for_backbone("convnext_atto", (64, 64), small)
    encoder = ImageEncoder(card, freeze_blocks=2)
    frozen = {".".join(n.split(".")[1:3]) for n, p in encoder.named_parameters() if not p.requires_grad}
    assert frozen == {"stem.0", "stem.1", "stages.0", "stages.1"}
    # the head's norm after the last stage is no stage of its own
    with pytest.raises(GeolinkError, match=r"cannot freeze 5 blocks of convnext_atto \(it has 4\)"):
        ImageEncoder(card, freeze_blocks=5)
    no_groups = card_for_backbone("poolformerv2_s12", (64, 64), small)  # timm gives it no grouping
    assert ImageEncoder(no_groups).descriptor_dim == 16
    with pytest.raises(GeolinkError, match="^poolformerv2_s12: timm describes no blocks or stages"):
        ImageEncoder(no_groups, freeze_blocks=1)


def test_convnet_backbone_gives_its_last_map():
    card = ModelCard(
        backbone="test_resnet",
        image_size=(64, 96),
        feature_dim=96,
        feature_size=(2, 3),
        aggregator=MixVPRConfig(out_channels=8, out_rows=2),
    )
    encoder = ImageEncoder(card, freeze_blocks=1)
    images = torch.randn(2, 3, 64, 96, generator=_seeded(2))
    assert encoder.feature_map(images).shape == (2, 96, 2, 3) and encoder(images).shape == (2, 16)
    frozen = {n.split(".")[1] for n, p in encoder.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "bn1", "layer1"}
    with pytest.raises(GeolinkError, match="unknown timm backbone 'no_such_net'"):
        ImageEncoder(card.model_copy(update={"backbone": "no_such_net"}))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_backbone_weights_are_loaded_and_resized(tmp_path, suffix):
    torch.manual_seed(3)
    source = timm.create_model("vit_tiny_patch16_224", num_classes=0)  # 224 px: 14x14 position grid
    path = tmp_path / f"backbone{suffix}"
    state = source.state_dict()
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    encoder = ImageEncoder(card_for_preset("tiny"), weights=path)
    assert torch.equal(encoder.backbone.blocks[5].attn.qkv.weight, source.blocks[5].attn.qkv.weight)
    assert encoder.backbone.pos_embed.shape == (1, 1 + 7 * 7, 192)


def test_local_weights_of_another_backbone_are_refused(tmp_path):
    path = tmp_path / "small.safetensors"
    save_file(timm.create_model("vit_small_patch16_224", num_classes=0, depth=1).state_dict(), path)
    with pytest.raises(GeolinkError, match="small.safetensors: cannot load into backbone vit_tiny.*size mis"):
        ImageEncoder(card_for_preset("tiny"), weights=path)
    with pytest.raises(GeolinkError, match="missing.pth: backbone weights file not found"):
        ImageEncoder(card_for_preset("tiny"), weights=tmp_path / "missing.pth")
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(GeolinkError, match="cut.safetensors: cannot load into backbone"):
        ImageEncoder(card_for_preset("tiny"), weights=tmp_path / "cut.safetensors")


def test_pretrained_offline_says_so():
    code = (
        "from geolink_edge.errors import GeolinkError\n"
        "from geolink_edge.models import ImageEncoder, card_for_preset\n"
        "try:\n    ImageEncoder(card_for_preset('tiny'), pretrained=True)\n"
        "except GeolinkError as exc:\n    print(exc)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert "cannot download pretrained vit_tiny_patch16_224 from the timm hub" in out.stdout


def test_one_cpu_training_step_lowers_the_loss():
    torch.manual_seed(0)
    encoder = ImageEncoder(card_for_preset("tiny")).train()
    points, mme = PointNN(stages=2, embed_dim=12, k=4), MixtureOfExperts(48, 256)
    loss_fn = GeoLinkLoss(dim=256, club_hidden=32)
    images = torch.randn(4, 3, 3, 112, 112, generator=_seeded(4))  # dro, dro2, sat, sat2 of 3 places
    clouds = torch.randn(2, 3, 64, 3, generator=_seeded(5))
    params = [*encoder.parameters(), *mme.parameters(), *loss_fn.encoder_parameters()]
    optimiser = torch.optim.AdamW(params, lr=1e-3)

    def loss() -> torch.Tensor:
        torch.manual_seed(7)  # the same vCLUB shuffle both times
        emb = encoder(images.flatten(0, 1)).unflatten(0, (4, 3))
        pc = mme(points(clouds.flatten(0, 1))).unflatten(0, (2, 3))
        feats = {"dro": emb[0], "dro2": emb[1], "sat": emb[2], "sat2": emb[3], "pc": pc[0], "pc2": pc[1]}
        return loss_fn(feats)[0]

    before = loss()
    optimiser.zero_grad()
    before.backward()
    optimiser.step()
    with torch.no_grad():
        after = loss()
    assert after.item() < before.item() - 0.05


# --- hash and checkpoints -----------------------------------------------------------------------


def test_hash_survives_reload_and_changes_with_one_weight(tiny_encoder, tiny_checkpoint):
    encoder, card = load_encoder(tiny_checkpoint)
    assert card.weights_hash == tiny_encoder.model_card().weights_hash == encoder.model_card().weights_hash
    assert len(card.weights_hash) == 64
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    state["aggregator.row_proj.bias"][0] += 1e-6
    assert hash_state_dict(state) != card.weights_hash


def test_checkpoint_round_trip_keeps_extra_entries(tiny_checkpoint):
    data = read_checkpoint(tiny_checkpoint)
    assert data["format"] == "geolink-edge/checkpoint/1" and data["epoch"] == 0
    assert data["config"] == {"model": {"preset": "tiny"}}


def test_truncated_foreign_and_pickled_files_are_refused(tiny_checkpoint, tmp_path):
    blob = tiny_checkpoint.read_bytes()
    (tmp_path / "cut.pt").write_bytes(blob[: len(blob) // 2])
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    torch.save({"obj": torch.optim.SGD}, tmp_path / "pickled.pt")
    cases = {
        "cut.pt": "not a readable checkpoint",
        "foreign.pt": "not a geolink-edge checkpoint",
        "pickled.pt": "refused to unpickle",
        "absent.pt": "checkpoint not found",
    }
    for name, message in cases.items():
        with pytest.raises(GeolinkError, match=message) as info:
            read_checkpoint(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)


def test_checkpoint_of_another_architecture_or_hash_is_refused(tiny_checkpoint, tmp_path):
    data = read_checkpoint(tiny_checkpoint)
    wrong_card = {**data["model_card"], "weights_hash": "0" * 64}
    save_checkpoint(tmp_path / "hash.pt", {**data, "model_card": wrong_card})
    with pytest.raises(GeolinkError, match="model hash 000000000000"):
        load_encoder(tmp_path / "hash.pt")
    other = {k: v for k, v in data["encoder"].items() if not k.startswith("aggregator.mixers.1.")}
    other_card = {**data["model_card"], "weights_hash": hash_state_dict(other)}
    save_checkpoint(tmp_path / "arch.pt", {**data, "model_card": other_card, "encoder": other})
    with pytest.raises(GeolinkError, match="do not fit vit_tiny_patch16_224 \\(6 missing"):
        load_encoder(tmp_path / "arch.pt")


def test_failed_save_leaves_nothing(tiny_checkpoint, tmp_path):
    data = read_checkpoint(tiny_checkpoint)
    with pytest.raises(Exception):  # noqa: B017 - any pickling failure
        save_checkpoint(tmp_path / "bad.pt", {**data, "metrics": {"f": lambda: 0}})
    assert list(tmp_path.iterdir()) == []


# --- 3D branch ----------------------------------------------------------------------------------


def test_fps_picks_far_points_from_the_extreme():
    xyz = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [2, 0, 0], [3, 0, 0], [10, 0, 0]]])
    assert farthest_point_sample(xyz, 3).tolist() == [[4, 0, 3]]


def test_trig_encoding_by_hand():
    xyz = torch.tensor([[0.01, 0.02, -0.03]])
    got = trig_encoding(xyz, dim=12, alpha=1000.0, beta=100.0)[0]
    # two frequencies: beta*x / 1000^(0/2) and beta*x / 1000^(1/2); per coordinate sin₀ cos₀ sin₁ cos₁
    want = []
    for x in (0.01, 0.02, -0.03):
        for angle in (100 * x, 100 * x / math.sqrt(1000)):
            want += [math.sin(angle), math.cos(angle)]
    assert got.shape == (12,)
    assert torch.allclose(got, torch.tensor(want), atol=1e-6)
    assert math.isclose(got[4].item(), math.sin(2.0), abs_tol=1e-6)  # y, sin, freq 0
    assert math.isclose(got[5].item(), math.cos(2.0), abs_tol=1e-6)  # y, cos, freq 0


def _gelu(v: float) -> float:
    return 0.5 * v * (1 + math.erf(v / math.sqrt(2)))


def _encode(vec: list[float], dim: int, alpha: float = 1000.0, beta: float = 100.0) -> list[float]:
    freqs = dim // 6
    out = []
    for x in vec:
        for i in range(freqs):
            angle = beta * x / alpha ** (i / freqs)
            out += [math.sin(angle), math.cos(angle)]
    return out


def _std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def test_one_pointnn_stage_by_hand():
    """Four points, one stage, 6-d raw embedding, k = 2: the reference's arithmetic written out."""
    pts = [[0.5, 0.0, 0.0], [0.0, 0.1, 0.0], [-0.1, 0.0, 0.0], [0.0, -0.2, 0.1]]
    raw = [_encode(p, 6) for p in pts]
    # FPS from point 0 (the farthest from the centroid) picks 2 (0.6 away); their 2 nearest points
    groups = {0: [0, 1], 2: [2, 1]}
    rel_xyz = {c: [[pts[j][a] - pts[c][a] for a in range(3)] for j in g] for c, g in groups.items()}
    rel_f = {c: [[raw[j][a] - raw[c][a] for a in range(6)] for j in g] for c, g in groups.items()}
    std_xyz = _std([v for c in groups for row in rel_xyz[c] for v in row]) + 1e-5
    std_f = _std([v for c in groups for row in rel_f[c] for v in row]) + 1e-5
    stage = []
    for c in groups:
        weighted = []
        for xyz, f in zip(rel_xyz[c], rel_f[c], strict=True):
            feat = [v / std_f for v in f] + raw[c]  # 12 channels
            pe = _encode([v / std_xyz for v in xyz], 12)
            weighted.append([(a + b) * b for a, b in zip(feat, pe, strict=True)])
        pooled = [max(col) + sum(col) / len(col) for col in zip(*weighted, strict=True)]
        stage.append([_gelu(v / math.sqrt(1 + 1e-5)) for v in pooled])
    want = [max(col) + sum(col) / len(col) for col in zip(*stage, strict=True)]
    got = PointNN(stages=1, embed_dim=6, k=2)(torch.tensor([pts]))[0]
    assert got.shape == (12,)
    assert torch.allclose(got, torch.tensor(want), atol=1e-4, rtol=1e-4)


def test_pointnn_is_order_invariant_deterministic_and_batch_independent():
    net = PointNN(stages=3, embed_dim=24, k=6)
    clouds = torch.rand(3, 128, 3, generator=_seeded(6)) * 2 - 1
    out = net(clouds)
    shuffled = net(clouds[:, torch.randperm(128, generator=_seeded(7))])
    assert out.shape == (3, 24 * 8)
    assert (out - shuffled).abs().max().item() < 1e-4 * out.abs().max().item()
    assert torch.equal(net.train()(clouds[1:2]), net.eval()(clouds[1:2]))
    assert (net(clouds[1:2])[0] - out[1]).abs().max().item() < 1e-5
    assert (out[0] - out[1]).abs().max().item() > 1e-2  # different clouds, different features


def test_pointnn_default_width_and_point_budget():
    net = PointNN()  # 4 stages, 72 → 1152, k = 90
    assert net.out_dim == 1152
    with pytest.raises(GeolinkError, match="needs at least 720 points, got 256"):
        net(torch.rand(1, 256, 3))
    assert PointNN(k=4)(torch.rand(2, 64, 3, generator=_seeded(8))).shape == (2, 1152)


def test_mme_shapes_and_gate():
    mme = MixtureOfExperts(1152, 4096, num_experts=3)
    x = torch.randn(5, 1152, generator=_seeded(9))
    out, gates = mme(x), mme.gate_weights(x)
    assert out.shape == (5, 4096) and gates.shape == (5, 3)
    assert torch.allclose(gates.sum(-1), torch.ones(5))
    assert [e.proj[1].out_features for e in mme.experts] + [mme.shared.out_features] == [1024] * 4
    assert [e.mix.dilation[0] for e in mme.experts] == [1, 2, 3]
    assert MixtureOfExperts(48, 10, num_experts=3)(torch.randn(2, 48)).shape == (2, 10)


def test_club_log_likelihood_by_hand():
    club = CLUBEstimator(2, 2, hidden=4, variance="fixed")
    x, y = torch.randn(3, 2, generator=_seeded(10)), torch.randn(3, 2, generator=_seeded(11))
    mu = club.mean(x)
    hand = (-0.5 * ((y - mu) ** 2).sum(-1) - math.log(2 * math.pi)).mean()
    assert torch.allclose(club.log_likelihood(x, y), hand)
    assert torch.allclose(club.learning_loss(x, y), -hand)


def _fitted_bound(rho: float, variance: str) -> float:
    """vCLUB after fitting on x ~ N(0, I4), y = rho·x + sqrt(1 - rho²)·noise."""
    dim, gen = 4, _seeded(12)
    torch.manual_seed(12)

    def sample() -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(512, dim, generator=gen)
        return x, rho * x + math.sqrt(1 - rho**2) * torch.randn(512, dim, generator=gen)

    club = CLUBEstimator(dim, dim, hidden=32, variance=variance)
    optimiser = torch.optim.Adam(club.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    try:
        for _ in range(200):
            loss = club.learning_loss(*sample())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            return club.upper_bound(*sample(), generator=gen).item()
    finally:
        torch.set_num_threads(threads)


def test_vclub_bounds_known_mutual_information():
    true_mi = -4 / 2 * math.log(1 - 0.8**2)  # 2.04 nats for four pairs with correlation 0.8
    correlated, independent = _fitted_bound(0.8, "learned"), _fitted_bound(0.0, "learned")
    # with a well-fitted q the bound tends to d·rho²/(1-rho²) = 7.1 here
    assert true_mi - 0.3 < correlated < 7.1 + 1.0
    assert abs(independent) < 0.2
    assert _fitted_bound(0.8, "fixed") > true_mi - 0.3 > 5 * abs(_fitted_bound(0.0, "fixed"))
