"""The GeoLink losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch

from geolink_edge.losses import GeoLinkLoss, info_nce, normalised_distances, relation_distillation


def _unit(*rows: tuple[float, ...]) -> torch.Tensor:
    t = torch.tensor(rows)
    return t / t.norm(dim=1, keepdim=True)


VIEWS = ("dro", "sat", "pc", "dro2", "sat2", "pc2")
CROSS_PAIRS = (("dro", "sat"), ("dro", "pc"), ("sat", "pc"))
Q = _unit((1.0, 0.0), (0.6, 0.8))
R = _unit((0.8, 0.6), (0.0, 1.0))


def _ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def test_info_nce_is_cross_entropy_by_hand():
    # cosines: q0·r0 = 0.8, q0·r1 = 0, q1·r0 = 0.96, q1·r1 = 0.8; temperature 0.5 doubles them
    rows = [[1.6, 0.0], [1.92, 1.6]]
    q_to_r = (_ce(rows[0], 0) + _ce(rows[1], 1)) / 2
    r_to_q = (_ce([1.6, 1.92], 0) + _ce([0.0, 1.6], 1)) / 2
    one_way = info_nce(Q, R, temperature=0.5, symmetric=False).item()
    assert math.isclose(one_way, q_to_r, rel_tol=1e-5)
    assert math.isclose(info_nce(Q, R, temperature=0.5).item(), (q_to_r + r_to_q) / 2, rel_tol=1e-5)


def test_info_nce_label_smoothing_by_hand():
    eps, rows = 0.1, [[1.6, 0.0], [1.92, 1.6]]

    def smoothed(row: list[float], target: int) -> float:
        return (1 - eps) * _ce(row, target) + eps * sum(_ce(row, j) for j in range(2)) / 2

    want = (smoothed(rows[0], 0) + smoothed(rows[1], 1)) / 2
    got = info_nce(Q, R, temperature=0.5, label_smoothing=eps, symmetric=False).item()
    assert math.isclose(got, want, rel_tol=1e-5)


def test_info_nce_normalises_and_accepts_a_log_scale():
    by_scale = info_nce(3 * Q, 7 * R, logit_scale=torch.tensor(math.log(2.0)))
    assert math.isclose(by_scale.item(), info_nce(Q, R, temperature=0.5).item(), rel_tol=1e-6)


def test_perfect_alignment_at_low_temperature_is_near_zero():
    x = torch.eye(6)
    assert info_nce(x, x, temperature=0.01).item() < 1e-6
    assert info_nce(x, x.roll(1, dims=0), temperature=0.01).item() > 50  # every positive wrong


def test_normalised_distances_by_hand():
    a = normalised_distances(torch.tensor([[0.0], [1.0], [3.0]]))
    # distances 1, 3, 2 counted twice: 12 in all
    want = torch.tensor([[0, 1, 3], [1, 0, 2], [3, 2, 0]]) / 12
    assert torch.allclose(a, want, atol=1e-6)


def test_relation_distillation_by_hand():
    teacher, student = torch.tensor([[0.0], [1.0], [3.0]]), torch.tensor([[0.0], [2.0], [3.0]])
    # A_S - A_T = ±1/12 on four of the six off-diagonal entries, mean over 6
    assert math.isclose(relation_distillation(student, teacher).item(), 4 / 144 / 6, rel_tol=1e-4)


def test_relation_distillation_mean_scale_by_hand():
    teacher, student = torch.tensor([[0.0], [1.0], [3.0]]), torch.tensor([[0.0], [2.0], [3.0]])
    # both mean distances are 2: A_T = (1, 3, 2)/2, A_S = (2, 3, 1)/2, differences ±1/2 on four entries
    assert torch.allclose(
        normalised_distances(teacher, "mean"), torch.tensor([[0, 0.5, 1.5], [0.5, 0, 1], [1.5, 1, 0]])
    )
    assert math.isclose(relation_distillation(student, teacher, "mean").item(), 1 / 6, rel_tol=1e-4)
    with pytest.raises(ValueError, match="unknown L_rd scale"):
        normalised_distances(teacher, "max")


def test_relation_distillation_zero_for_scaled_student_positive_when_shuffled():
    teacher = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    assert relation_distillation(3.5 * teacher, teacher).item() < 1e-12
    shuffled = relation_distillation(teacher[torch.tensor([1, 0, 3, 2, 5, 4, 7, 6])], teacher).item()
    base = (normalised_distances(teacher) ** 2).mean().item()
    assert shuffled > 1e-3 * base


def test_relation_distillation_does_not_train_the_teacher():
    teacher = torch.randn(4, 8, requires_grad=True)
    student = torch.randn(4, 8, requires_grad=True)
    relation_distillation(student, teacher).backward()
    assert teacher.grad is None and student.grad.abs().sum().item() > 0


def _features(seed: int = 0, dim: int = 16) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(6, dim, generator=gen, requires_grad=True) for k in VIEWS}


def test_total_is_cc_rd_ga_plus_four_sc():
    loss = GeoLinkLoss(dim=16, club_hidden=8)
    feats = _features()
    torch.manual_seed(1)
    total, terms = loss(feats)
    assert set(terms) == {"cc", "sc", "ga", "rd", "logit_scale"}
    assert math.isclose(terms["logit_scale"].item(), 1 / 0.07, rel_tol=1e-5)
    want = terms["cc"] + terms["rd"] + terms["ga"] + 4 * terms["sc"]
    assert math.isclose(total.item(), want.item(), rel_tol=1e-6)
    scale = loss.logit_scale
    cc = sum(info_nce(feats[a], feats[b], logit_scale=scale, label_smoothing=0.1) for a, b in CROSS_PAIRS)
    assert math.isclose(terms["cc"].item(), cc.item(), rel_tol=1e-6)


def test_terms_switch_off_and_reweight():
    feats = _features(2)
    only_cc = GeoLinkLoss(dim=16, sc=0, ga=0, rd=0, temperature=0.1, label_smoothing=0.0)
    total, terms = only_cc(feats)
    assert set(terms) == {"cc"} and len(only_cc.club) == 0
    want = sum(info_nce(feats[a], feats[b], temperature=0.1) for a, b in CROSS_PAIRS)
    assert math.isclose(total.item(), want.item(), rel_tol=1e-6)
    half_rd = GeoLinkLoss(dim=16, cc=0, sc=0, ga=0, rd=0.5)
    assert math.isclose(half_rd(feats)[0].item(), 0.5 * half_rd(feats)[1]["rd"].item(), rel_tol=1e-6)
    with pytest.raises(ValueError, match="missing \\['sat2'\\]"):
        second_view = GeoLinkLoss(dim=16, club_hidden=8, sc_positive="second_view")
        second_view({k: v for k, v in feats.items() if k != "sat2"})


def test_intra_view_term_is_eq7_each_anchor_its_own_positive():
    # dro, sat: cosine 0.6 between the two instances; pc: orthogonal. At temperature 0.5 each
    # row's cross-entropy is log(1 + exp(2·cos − 2)), the same for both rows and both directions.
    pc = torch.eye(2)
    feats = {"dro": Q, "sat": R, "pc": pc, "dro2": pc, "sat2": pc, "pc2": Q}
    paper = GeoLinkLoss(dim=2, cc=0, ga=0, rd=0, temperature=0.5, label_smoothing=0.0)
    total, terms = paper(feats)
    want = 2 * math.log(1 + math.exp(-0.8)) + math.log(1 + math.exp(-2.0))
    assert math.isclose(terms["sc"].item(), want, rel_tol=1e-5)
    assert math.isclose(total.item(), 4 * want, rel_tol=1e-5)  # λ = 4
    second = GeoLinkLoss(
        dim=2, cc=0, ga=0, rd=0, temperature=0.5, label_smoothing=0.0, sc_positive="second_view"
    )
    want_second = sum(info_nce(feats[v], feats[f"{v}2"], temperature=0.5) for v in ("dro", "sat", "pc"))
    assert math.isclose(second(feats)[1]["sc"].item(), want_second.item(), rel_tol=1e-6)


def test_rd_scale_reaches_the_total():
    feats = _features(6)
    paper = GeoLinkLoss(dim=16, cc=0, sc=0, ga=0)(feats)[1]["rd"].item()
    mean = GeoLinkLoss(dim=16, cc=0, sc=0, ga=0, rd_scale="mean")(feats)[1]["rd"].item()
    want = sum(relation_distillation(feats[v], feats["pc"], "mean") for v in ("dro", "sat")).item()
    assert math.isclose(mean, want, rel_tol=1e-6)
    assert math.isclose(mean / paper, (6 * 5) ** 2, rel_tol=1e-3)  # B(B−1) squared


def test_club_loss_trains_only_the_estimators():
    loss = GeoLinkLoss(dim=16, club_hidden=8, club_variance="fixed")
    feats = _features(3)
    club_loss = loss.club_loss(feats)
    club_loss.backward()
    assert all(feats[k].grad is None for k in feats)
    assert all(p.grad is not None for p in loss.club.parameters())
    pc, dro, sat = feats["pc"], feats["dro"], feats["sat"]
    hand = -(loss.club["dro"].log_likelihood(pc, dro) + loss.club["sat"].log_likelihood(pc, sat))
    assert math.isclose(club_loss.item(), hand.item(), rel_tol=1e-6)
    assert loss.encoder_parameters() == [loss.logit_scale]


def test_loss_runs_in_float32_under_autocast():
    loss = GeoLinkLoss(dim=16, club_hidden=8)
    feats = _features(4)
    torch.manual_seed(5)
    want, _ = loss(feats)
    torch.manual_seed(5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, terms = loss({k: v.bfloat16() for k, v in feats.items()})
    assert got.dtype == torch.float32 and terms["rd"].dtype == torch.float32
    assert abs(got.item() - want.item()) < 0.05 * abs(want.item())
