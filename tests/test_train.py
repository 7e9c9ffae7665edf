"""Training: configuration, schedule, RNG state, and real tiny runs (train, SIGKILL, resume)."""

from __future__ import annotations

import math
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from _train_fixtures import make_dataset
from timm.data import resolve_model_data_config

from geolink_edge.card import ModelCard, hash_state_dict
from geolink_edge.errors import GeolinkError
from geolink_edge.losses import GeoLinkLoss
from geolink_edge.models import ImageEncoder, card_for_preset
from geolink_edge.models.checkpoint import load_encoder, read_checkpoint
from geolink_edge.train import trainer
from geolink_edge.train.config import parse_losses, parse_weights, resolve_config
from geolink_edge.train.distributed import DistInfo
from geolink_edge.train.networks import GeoLinkNetworks
from geolink_edge.train.precision import Precision
from geolink_edge.train.rng import capture_rng, restore_rng, seed_everything
from geolink_edge.train.schedule import lr_factor, warmup_cosine
from geolink_edge.train.step import TrainStep


def test_paper_preset_is_the_paper_recipe():
    conf = resolve_config("paper")
    assert conf.model == "geolink" and conf.points == 1024 and conf.experts == 3 and conf.mme
    assert conf.club_hidden == 4096 and conf.batch_size == 8 and conf.epochs == 40
    assert (conf.lr, conf.min_lr, conf.warmup_epochs) == (6e-4, 1e-4, 0.1)
    assert conf.loss_weight("sc") == 4.0 and conf.active_losses == ("cc", "sc", "ga", "rd")
    # Eq. 5-7 (one way, unsmoothed, L_sc at its own fixed tau), Eq. 11-13, a learned vCLUB variance,
    # no clipping, full fine-tuning (Table 6)
    assert (conf.sc_positive, conf.rd_scale, conf.club_variance) == ("self", "paper", "learned")
    assert (conf.infonce, conf.label_smoothing, conf.temperature) == ("one_way", 0.0, 0.07)
    assert (conf.cc_temperature, conf.sc_temperature) == ("learned", "fixed")
    assert (conf.clip_mode, conf.freeze_blocks) == ("none", 0)
    tiny = resolve_config("tiny")
    assert (tiny.freeze_blocks, tiny.clip_mode, tiny.grad_clip) == (8, "norm", 1.0)


def test_each_paper_departure_is_a_config_key_that_reaches_the_networks():
    options = {"sc_positive": "second_view", "rd_scale": "mean", "club_variance": "fixed", "freeze_blocks": 2}
    conf = resolve_config("tiny", overrides={**FAST, **options})
    for key, value in options.items():
        assert f"{key}: {value}" in conf.to_yaml()
    nets = GeoLinkNetworks(conf, card_for_preset(conf.model))
    assert nets.features.second_views and conf.needs_second_views
    assert (nets.loss_fn.sc_positive, nets.loss_fn.rd_scale) == ("second_view", "mean")
    assert all(club.logvar is None for club in nets.loss_fn.club.values())
    paper = GeoLinkNetworks(resolve_config("tiny", overrides=FAST), card_for_preset("tiny"))
    assert not paper.features.second_views and all(c.logvar is not None for c in paper.loss_fn.club.values())


def test_the_training_defaults_build_the_loss_defaults():
    # what the trainer builds from the default config is GeoLinkLoss at its defaults, the form the
    # loss tests check against Eq. 5-15 by hand
    nets = GeoLinkNetworks(resolve_config("tiny", overrides=FAST), card_for_preset("tiny"))
    built, default = nets.loss_fn, GeoLinkLoss(dim=8, club_hidden=4)
    for attr in ("temperature", "symmetric", "label_smoothing", "sc_positive", "rd_scale", "weights"):
        assert getattr(built, attr) == getattr(default, attr), attr
    assert built.sc_logit_scale is None and default.sc_logit_scale is None
    assert built.logit_scale is not None and default.logit_scale is not None
    assert (
        {c.variance_form for c in built.club.values()} == {default.club["dro"].variance_form} == {"learned"}
    )
    options = {
        "infonce": "symmetric",
        "cc_temperature": "fixed",
        "sc_temperature": "learned",
        "label_smoothing": 0.1,
    }
    other = GeoLinkNetworks(
        resolve_config("tiny", overrides={**FAST, **options}), card_for_preset("tiny")
    ).loss_fn
    assert other.symmetric and other.logit_scale is None and other.sc_logit_scale is not None
    assert other.label_smoothing == 0.1


@pytest.mark.parametrize("mode", ["none", "norm", "value"])
def test_clip_mode_bounds_the_gradients_the_optimiser_sees(mode):
    conf = resolve_config("tiny", overrides={**FAST, "clip_mode": mode, "grad_clip": 1e-3})
    torch.manual_seed(0)
    card = card_for_preset(conf.model)
    nets = GeoLinkNetworks(conf, card)
    step = TrainStep(conf, nets, Precision.choose("off", torch.device("cpu")), DistInfo(), 1, 0)
    gen = torch.Generator().manual_seed(0)
    batch = {k: torch.randn(4, 3, *card.image_size, generator=gen) for k in ("drone", "satellite")}
    batch |= {"points": torch.rand(4, conf.points, 3, generator=gen), "label": torch.arange(4)}
    step(batch)
    grads = [p.grad for p in step.params if p.grad is not None]
    largest = max(g.abs().max().item() for g in grads)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
    if mode == "none":
        assert norm > 1e-2 and largest > 1e-3
    elif mode == "norm":
        assert norm <= 1e-3 * (1 + 1e-4)
    else:
        assert largest <= 1e-3 * (1 + 1e-6) and norm > 1e-3


def test_yaml_then_overrides_take_precedence(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochs: 3\nlr: 0.002\nlosses: [cc, rd]\n")
    conf = resolve_config("tiny", path, {"epochs": 5, "seed": None})
    assert conf.epochs == 5 and conf.lr == 0.002 and conf.active_losses == ("cc", "rd")
    assert conf.model == "tiny" and conf.seed == 0


def test_baseline_has_only_the_2d_contrastive_term():
    conf = resolve_config("tiny", overrides={"baseline": True})
    assert conf.active_losses == ("cc",) and not conf.needs_3d


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"epochs": -1}, "epochs"),
        ({"lr": 1e-5, "min_lr": 1e-4}, "min_lr"),
        ({"surprise": 1}, "surprise"),
        ({"batch_size": 1}, "batch_size"),
    ],
)
def test_bad_config_values_are_one_line_errors(overrides, message):
    with pytest.raises(GeolinkError, match=message):
        resolve_config("tiny", overrides=overrides)


def test_bad_yaml_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: [1\n")
    with pytest.raises(GeolinkError, match="bad.yaml.*not valid YAML"):
        resolve_config("tiny", path)


def test_loss_and_weight_parsing():
    assert parse_losses("cc, sc,rd") == ["cc", "sc", "rd"]
    assert parse_weights("sc=2,ga=0.5") == {"sc": 2.0, "ga": 0.5}
    with pytest.raises(GeolinkError, match="unknown loss term 'xx'"):
        parse_losses("cc,xx")
    with pytest.raises(GeolinkError, match="term=value"):
        parse_weights("sc=-1")


def test_warmup_then_cosine_to_the_floor():
    total, warm, floor = 100, 10, 1e-4 / 6e-4
    assert lr_factor(0, total, warm, floor) == pytest.approx(0.1)
    assert lr_factor(9, total, warm, floor) == pytest.approx(1.0)
    assert lr_factor(55, total, warm, floor) == pytest.approx(floor + (1 - floor) * 0.5)  # half-way
    assert lr_factor(100, total, warm, floor) == pytest.approx(floor)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=6e-4)
    sched = warmup_cosine(opt, total, warm, 6e-4, 1e-4)
    for _ in range(100):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert math.isclose(sched.state_dict()["last_epoch"], 100)


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    seed_everything(7)
    torch.save(capture_rng(), tmp_path / "rng.pt")
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    seed_everything(99)
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected


# ---- real tiny runs --------------------------------------------------------------------------

FAST = {"epochs": 2, "steps_per_epoch": 2, "batch_size": 4, "val_batch_size": 16, "points": 128}
ONE_STEP = {**FAST, "epochs": 1, "steps_per_epoch": 1}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data"), train=8, test=4, distractors=2, views=2)


@pytest.fixture(scope="module")
def finished_run(dataset, tmp_path_factory) -> Path:
    conf = resolve_config("tiny", overrides=FAST)
    return trainer.main(conf, dataset, tmp_path_factory.mktemp("runs") / "run", quiet=True)


def _adam_steps(optimizer_state: dict) -> int:
    """Adam's own step counter: how many updates the parameters really received."""
    return int(next(iter(optimizer_state["state"].values()))["step"])


def test_tiny_run_trains_all_four_losses_and_writes_the_run(finished_run):
    files = {p.name for p in finished_run.iterdir()}
    assert {"config.yaml", "last.pt", "best.pt", "metrics.csv", "tensorboard"} <= files
    assert resolve_config("tiny", finished_run / "config.yaml").epochs == 2
    last = read_checkpoint(finished_run / "last.pt")
    assert (last["epoch"], last["position"], last["step"]) == (2, 0, 4)
    assert _adam_steps(last["optimizer"]) == 4
    card = ModelCard.from_dict(last["model_card"])
    assert card.tile_m == 120.0 and card.weights_hash == hash_state_dict(last["encoder"])
    header, *rows = (finished_run / "metrics.csv").read_text().splitlines()
    for term in ("loss/cc", "loss/sc", "loss/ga", "loss/rd", "loss/club_fit", "val/R@1", "val/AP"):
        assert term in header.split(",")
    assert len(rows) == 2


def test_vclub_estimators_are_fitted_by_their_own_optimiser(finished_run):
    ckpt = read_checkpoint(finished_run / "last.pt")
    assert _adam_steps(ckpt["club_optimizer"]) == 4 * resolve_config("tiny").club_steps
    n_main = sum(len(g["params"]) for g in ckpt["optimizer"]["param_groups"])
    n_club = sum(len(g["params"]) for g in ckpt["club_optimizer"]["param_groups"])
    assert n_club == len(ckpt["club"])  # every estimator tensor, and only those
    frozen = resolve_config("tiny").freeze_blocks
    encoder = ImageEncoder(card_for_preset("tiny"), freeze_blocks=frozen)
    trainable = sum(p.requires_grad for p in encoder.parameters())
    assert 0 < trainable < len(ckpt["encoder"])  # the preset's frozen blocks stay out of the optimiser
    assert n_main == trainable + len(ckpt["branch3d"])  # trained encoder part, MME, logit scale


def test_baseline_and_no_mme_runs(dataset, tmp_path):
    base = trainer.main(
        resolve_config("tiny", overrides={**ONE_STEP, "baseline": True}),
        dataset,
        tmp_path / "base",
        quiet=True,
    )
    ckpt = read_checkpoint(base / "last.pt")
    assert set(ckpt["branch3d"]) == {"logit_scale"} and not ckpt["club"]
    lin = trainer.main(
        resolve_config("tiny", overrides={**ONE_STEP, "mme": False}), dataset, tmp_path / "linear", quiet=True
    )
    assert "branch3d.weight" in read_checkpoint(lin / "last.pt")["branch3d"]


def test_backbone_option_trains_any_timm_model_with_timms_card(cli, dataset, tmp_path):
    steps = ["--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--points", "128"]
    common = ["--preset", "tiny", "--freeze-blocks", "1", *steps, "--quiet"]
    run = tmp_path / "resnet"
    res = cli("train", dataset, "--out", run, "--backbone", "resnet18", *common)
    assert res.returncode == 0, res.stderr
    ckpt = read_checkpoint(run / "last.pt")
    card = ModelCard.from_dict(ckpt["model_card"])
    timm_config = resolve_model_data_config(timm.create_model("resnet18"))
    assert (card.backbone, card.mean, card.std) == ("resnet18", timm_config["mean"], timm_config["std"])
    assert (card.image_size, card.feature_dim, card.feature_size) == ((112, 112), 512, (4, 4))
    assert ckpt["step"] == 2 and ckpt["config"]["backbone"] == "resnet18"
    encoder, _ = load_encoder(run / "last.pt")  # the card rebuilds the trained encoder
    assert encoder(torch.zeros(1, 3, 112, 112)).shape == (1, card.descriptor_dim)

    bad = cli("train", dataset, "--out", tmp_path / "bad", "--backbone", "resnet_99", *common)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown timm backbone 'resnet_99'")
    assert bad.stderr.strip().count("\n") == 0 and not (tmp_path / "bad").exists()


def test_sigkill_mid_epoch_then_resume_ends_like_a_straight_run(cli, finished_run, dataset, tmp_path):
    """Same options as ``finished_run``; killed one batch into epoch 2, resumed: same steps, same weights."""
    run = tmp_path / "run"
    args = [
        "train",
        str(dataset),
        "--out",
        str(run),
        "--preset",
        "tiny",
        "--epochs",
        "2",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "4",
        "--points",
        "128",
        "--save-every-steps",
        "1",
        "--quiet",
    ]
    # the trainer kills itself right after writing the checkpoint one batch into epoch 2: a real
    # SIGKILL at a known point, whatever the machine's speed (polling for it from here races the
    # next step on a busy CPU)
    hook = (
        "import os, signal\n"
        "from geolink_edge.train import trainer\n"
        "save = trainer.Trainer.save\n"
        "def save_then_die(self, name):\n"
        "    save(self, name)\n"
        "    if (self.progress.epoch, self.progress.position) == (1, 1):\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "trainer.Trainer.save = save_then_die\n"
    )
    argv = cli.argv(*args)
    argv[2] = "import sys\n" + hook + argv[2].split("\n", 1)[1]
    proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-500:]
    killed_at = read_checkpoint(run / "last.pt")
    assert (killed_at["epoch"], killed_at["position"]) == (1, 1)
    done = subprocess.run(cli.argv(*args, "--resume"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-800:]
    final = read_checkpoint(run / "last.pt")
    assert (final["step"], final["epoch"], _adam_steps(final["optimizer"])) == (4, 2, 4)
    assert final["scheduler"]["last_epoch"] == 4
    assert [r["epoch"] for r in final["metrics"]["history"]] == [1, 2]
    straight = read_checkpoint(finished_run / "last.pt")
    for name, value in straight["encoder"].items():
        assert torch.allclose(value, final["encoder"][name], atol=1e-4), name


def test_torchrun_with_two_ranks_trains_in_step_and_only_rank_0_writes(dataset, tmp_path):
    """DDP on the CPU (gloo): both ranks take the same number of steps, or the run would hang."""
    run = tmp_path / "ddp"
    args = ["train", str(dataset), "--out", str(run), "--preset", "tiny", "--device", "cpu", "--quiet"]
    args += ["--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "2", "--points", "128"]
    with socket.socket() as sock:  # torchrun's own default port may be taken by another run
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    proc = subprocess.Popen(
        [*cmd, "-m", "geolink_edge.cli", *args], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the ranks too, not only the launcher
        raise
    assert proc.returncode == 0, stderr[-800:]
    final = read_checkpoint(run / "last.pt")
    assert (final["step"], final["epoch"], _adam_steps(final["optimizer"])) == (4, 2, 4)
    # one writer: one row per epoch in the metrics, no temporary file left by a second process
    assert len((run / "metrics.csv").read_text().splitlines()) == 1 + 2
    assert sorted(p.name for p in run.iterdir()) == [
        "best.pt",
        "config.yaml",
        "last.pt",
        "metrics.csv",
        "tensorboard",
    ]


def test_bad_inputs_are_one_line_errors(cli, tmp_path):
    empty = tmp_path / "empty"
    (empty / "train" / "drone").mkdir(parents=True)
    (empty / "train" / "satellite").mkdir(parents=True)
    res = subprocess.run(
        cli.argv("train", str(empty), "--out", str(tmp_path / "r0"), "--preset", "tiny"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2 and res.stderr.startswith("error:") and res.stderr.strip().count("\n") == 0

    no_pc = make_dataset(tmp_path / "nopc", train=6, test=2, distractors=0, views=2)
    for path in sorted((no_pc / "pointclouds").glob("*.npz"))[:2]:
        path.unlink()
    with pytest.raises(GeolinkError, match="have no point cloud"):
        trainer.main(resolve_config("tiny", overrides=ONE_STEP), no_pc, tmp_path / "r1", quiet=True)
    skipped = resolve_config("tiny", overrides={**ONE_STEP, "skip_missing_pc": True})
    assert (trainer.main(skipped, no_pc, tmp_path / "r2", quiet=True) / "last.pt").is_file()


def test_resume_refuses_another_architecture_and_a_corrupt_file(finished_run, dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes((finished_run / "last.pt").read_bytes())
    with pytest.raises(GeolinkError, match="made with mme=True"):
        trainer.main(resolve_config("tiny", overrides={**FAST, "mme": False}), dataset, run, resume=True)
    (run / "last.pt").write_bytes((finished_run / "last.pt").read_bytes()[:5000])
    with pytest.raises(GeolinkError, match="not a readable checkpoint"):
        trainer.main(resolve_config("tiny", overrides=FAST), dataset, run, resume=True)
