"""The GeoLink losses against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from geolink_edge.losses import GeoLinkLoss, info_nce, normalised_distances, relation_distillation
from geolink_edge.models.club import CLUBEstimator


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


def _one_way_nce_by_hand(q: torch.Tensor, r: torch.Tensor, tau: float) -> float:
    """Eq. 5 averaged over the queries: −log softmax of q_i·r_i / τ among q_i·r_j / τ."""
    q, r = q.tolist(), r.tolist()
    total = 0.0
    for i, qi in enumerate(q):
        logits = [sum(a * b for a, b in zip(qi, rj, strict=True)) / tau for rj in r]
        total += _ce(logits, i)
    return total / len(q)


def _relation_by_hand(student: torch.Tensor, teacher: torch.Tensor) -> float:
    """Eq. 11-13 with explicit loops over i ≠ j."""

    def affinities(rows: list[list[float]]) -> dict[tuple[int, int], float]:
        pairs = [(i, j) for i in range(len(rows)) for j in range(len(rows)) if i != j]
        dist = {(i, j): math.dist(rows[i], rows[j]) for i, j in pairs}
        total = sum(dist.values())
        return {ij: d / total for ij, d in dist.items()}

    a_s, a_t = affinities(student.tolist()), affinities(teacher.tolist())
    b = len(student)
    return sum((a_s[ij] - a_t[ij]) ** 2 for ij in a_s) / (b * (b - 1))


def _vclub_by_hand(club, x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor) -> float:
    """Eq. 9 with the estimator's Gaussian in the features' own units (mean over i of
    log q(y_i|x_i) − log q(y_σ(i)|x_i), σ the shuffle the loss drew)."""
    with torch.no_grad():
        mu = (club.mean(x * club.x_scale) / club.y_scale).double()
        var = club.variance(x).double()
    y = y.detach().double()

    def log_q(rows: torch.Tensor) -> torch.Tensor:
        return -0.5 * (((rows - mu) ** 2) / var + var.log() + math.log(2 * math.pi)).sum(-1)

    return (log_q(y) - log_q(y[perm])).mean().item()


# three places in 3-d, each view a different arrangement (unit rows, as the encoders give)
EQ_FEATURES = {
    "dro": _unit((1.0, 0.2, 0.0), (0.1, 1.0, 0.3), (0.0, 0.4, 1.0)),
    "sat": _unit((0.9, 0.0, 0.4), (0.3, 0.8, 0.0), (0.2, 0.2, 1.0)),
    "pc": _unit((1.0, 0.5, 0.5), (0.0, 1.0, 0.1), (0.6, 0.0, 1.0)),
}


def test_default_configuration_is_eq5_to_eq15_term_by_term():
    torch.manual_seed(0)
    loss = GeoLinkLoss(dim=3, club_hidden=8)  # every option at its default
    torch.manual_seed(1)
    total, terms = loss(EQ_FEATURES)
    torch.manual_seed(1)
    perms = {v: torch.randperm(3) for v in ("dro", "sat")}  # the shuffles the vCLUB terms drew
    tau, f = 0.07, EQ_FEATURES
    # Eq. 6: three one-way pairs at τ = 0.07 (the learned scale's start), no smoothing
    cc = sum(_one_way_nce_by_hand(f[a], f[b], tau) for a, b in (("dro", "sat"), ("dro", "pc"), ("sat", "pc")))
    # Eq. 7: each view against itself, at L_sc's own fixed τ, no smoothing
    sc = sum(_one_way_nce_by_hand(f[v], f[v], tau) for v in ("dro", "sat", "pc"))
    # Eq. 10: vCLUB(dro; pc) + vCLUB(sat; pc)
    ga = sum(_vclub_by_hand(loss.club[v], f["pc"], f[v], perms[v]) for v in ("dro", "sat"))
    # Eq. 14: sat and dro students of the pc teacher, Eq. 11-13
    rd = sum(_relation_by_hand(f[v], f["pc"]) for v in ("dro", "sat"))
    for name, want in (("cc", cc), ("sc", sc), ("ga", ga), ("rd", rd)):
        assert math.isclose(terms[name].item(), want, rel_tol=1e-4, abs_tol=1e-6), name
    assert rd > 1e-5 and abs(ga) > 1e-3 and sc > 1e-3  # none of the terms is trivially 0
    assert math.isclose(total.item(), cc + rd + ga + 4 * sc, rel_tol=1e-4)  # Eq. 15, λ = 4
    assert math.isclose(terms["logit_scale"].item(), 1 / tau, rel_tol=1e-5)


def test_the_named_options_reach_each_term():
    f = EQ_FEATURES
    sample4geo = GeoLinkLoss(
        dim=3, ga=0, rd=0, symmetric=True, label_smoothing=0.1, cc_temperature="fixed", temperature=0.1
    )
    _, terms = sample4geo(f)
    cc = sum(info_nce(f[a], f[b], 0.1, label_smoothing=0.1) for a, b in CROSS_PAIRS)
    assert sample4geo.logit_scale is None and "logit_scale" not in terms
    assert math.isclose(terms["cc"].item(), cc.item(), rel_tol=1e-6)
    # L_sc is never smoothed, whatever L_cc's smoothing
    sc = sum(_one_way_nce_by_hand(f[v], f[v], 0.1) for v in ("dro", "sat", "pc"))
    assert math.isclose(terms["sc"].item(), sc, rel_tol=1e-5)
    learned = GeoLinkLoss(dim=3, ga=0, rd=0, sc_temperature="learned")
    assert learned.encoder_parameters() == [learned.logit_scale, learned.sc_logit_scale]
    with torch.no_grad():
        learned.sc_logit_scale.fill_(math.log(5.0))
    sc5 = sum(_one_way_nce_by_hand(f[v], f[v], 0.2) for v in ("dro", "sat", "pc"))
    assert math.isclose(learned(f)[1]["sc"].item(), sc5, rel_tol=1e-5)
    with pytest.raises(ValueError, match="unknown L_sc temperature"):
        GeoLinkLoss(dim=3, sc_temperature="shared")


def _mean_cosine_after_a_step(term) -> float:
    """Six instances with cosine 0.5 between any two (a shared component as large as each one's
    own), one gradient step of ``term`` on them: the mean cosine afterwards."""
    x = (torch.eye(8)[:6] + torch.eye(8)[7]).requires_grad_(True)
    term(x).backward()
    moved = F.normalize(x.detach() - 0.01 * x.grad, dim=1)
    return (moved @ moved.T)[~torch.eye(6, dtype=torch.bool)].mean().item()


def test_default_intra_view_term_pushes_instances_apart():
    # Eq. 7 unsmoothed lowers the cosine between instances; the same term with L_cc's old 0.1
    # smoothing raises it (its optimum sits near cosine 0.7): it pulled instances together
    paper = GeoLinkLoss(dim=8, cc=0, ga=0, rd=0)
    assert _mean_cosine_after_a_step(lambda x: paper({"dro": x, "sat": x, "pc": x})[0]) < 0.5 - 1e-4
    smoothed = _mean_cosine_after_a_step(lambda x: info_nce(x, x, 0.07, label_smoothing=0.1))
    assert smoothed > 0.5 + 1e-4


def test_terms_switch_off_and_reweight():
    feats = _features(2)
    only_cc = GeoLinkLoss(dim=16, sc=0, ga=0, rd=0, temperature=0.1, cc_temperature="fixed")
    total, terms = only_cc(feats)
    assert set(terms) == {"cc"} and len(only_cc.club) == 0
    want = sum(info_nce(feats[a], feats[b], temperature=0.1, symmetric=False) for a, b in CROSS_PAIRS)
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
    paper = GeoLinkLoss(dim=2, cc=0, ga=0, rd=0, temperature=0.5)
    total, terms = paper(feats)
    want = 2 * math.log(1 + math.exp(-0.8)) + math.log(1 + math.exp(-2.0))
    assert math.isclose(terms["sc"].item(), want, rel_tol=1e-5)
    assert math.isclose(total.item(), 4 * want, rel_tol=1e-5)  # λ = 4
    second = GeoLinkLoss(dim=2, cc=0, ga=0, rd=0, temperature=0.5, sc_positive="second_view")
    want_second = sum(
        info_nce(feats[v], feats[f"{v}2"], temperature=0.5, symmetric=False) for v in ("dro", "sat", "pc")
    )
    assert math.isclose(second(feats)[1]["sc"].item(), want_second.item(), rel_tol=1e-6)


def test_rd_scale_reaches_the_total():
    feats = _features(6)
    paper = GeoLinkLoss(dim=16, cc=0, sc=0, ga=0)(feats)[1]["rd"].item()
    mean = GeoLinkLoss(dim=16, cc=0, sc=0, ga=0, rd_scale="mean")(feats)[1]["rd"].item()
    want = sum(relation_distillation(feats[v], feats["pc"], "mean") for v in ("dro", "sat")).item()
    assert math.isclose(mean, want, rel_tol=1e-6)
    assert math.isclose(mean / paper, (6 * 5) ** 2, rel_tol=1e-3)  # B(B−1) squared


def test_club_loss_trains_only_the_estimators():
    loss = GeoLinkLoss(dim=16, club_hidden=8)
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


def _fitted_variance(form: str, steps: int = 400) -> tuple[float, float, float]:
    """(starting variance, fitted variance, sigma²) of q(y|x) for y = A·x + noise at the scale of
    unit-length descriptors: x unit vectors in 16-d, y 64-d of length about 1, noise sigma 0.3/√64
    per coordinate (σ² = 1.4e-3, far below the tanh form's floor e^-1)."""
    xd, yd = 16, 64
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    a = torch.randn(yd, xd, generator=gen) / math.sqrt(yd)
    sigma = 0.3 / math.sqrt(yd)

    def sample() -> tuple[torch.Tensor, torch.Tensor]:
        x = F.normalize(torch.randn(256, xd, generator=gen), dim=1)
        return x, x @ a.T + sigma * torch.randn(256, yd, generator=gen)

    club = CLUBEstimator(xd, yd, hidden=64, variance=form)
    optimiser = torch.optim.Adam(club.parameters(), lr=1e-3)
    start = club.variance(sample()[0]).mean().item()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add overhead
    try:
        for _ in range(steps):
            fit = club.learning_loss(*sample())
            optimiser.zero_grad()
            fit.backward()
            optimiser.step()
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        return start, club.variance(sample()[0]).mean().item(), sigma**2


def test_vclub_learns_a_known_conditional_variance_at_the_descriptors_scale():
    start, fitted, sigma2 = _fitted_variance("learned")
    assert start > 5 * fitted  # it moved: the start is 1/64, the per-coordinate scale of y
    assert sigma2 / 2 < fitted < 2 * sigma2
    _, bounded, _ = _fitted_variance("bounded")
    assert bounded >= math.exp(-1) - 1e-4  # the tanh form sits at its floor, 260 times too wide
