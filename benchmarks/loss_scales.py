"""How hard each form of L_sc and L_rd pulls: its value and the norm of its gradient on the 2D encoder,
both relative to the drone–satellite InfoNCE of the same batch (terms weighted as in the total).

One batch of the dataset's training pairs (or random tensors without ``--data``), the networks of
the preset or of a trained checkpoint. Answers "is this term inert at the paper's weight?".

    python benchmarks/loss_scales.py --data demo_out/world --checkpoint demo_out/run/best.pt
    python benchmarks/loss_scales.py --preset tiny              # random batch, random weights
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _results import publish_tables  # a sibling module: tables into RESULTS.md
from train_speed import random_batch  # a sibling script: random tensors in place of a batch

from geolink_edge.card import ModelCard
from geolink_edge.losses import GeoLinkLoss
from geolink_edge.models.checkpoint import read_checkpoint
from geolink_edge.models.presets import card_for_preset
from geolink_edge.train.config import TrainConfig, resolve_config
from geolink_edge.train.networks import GeoLinkNetworks

VARIANTS = (
    ("L_sc, self (Eq. 7)", "sc", {"sc_positive": "self"}),
    ("L_sc, second view", "sc", {"sc_positive": "second_view"}),
    ("L_rd, paper scale (sum)", "rd", {"rd_scale": "paper"}),
    ("L_rd, mean scale", "rd", {"rd_scale": "mean"}),
)


def data_batch(data_root: Path, conf, card, seed: int) -> dict[str, torch.Tensor]:
    from geolink_edge.data.datasets import open_dataset
    from geolink_edge.data.sampler import UniqueLocationBatchSampler
    from geolink_edge.data.torch_datasets import TrainPairs

    pairs = TrainPairs(
        open_dataset(data_root), tuple(card.image_size), conf.points, seed=seed, mean=card.mean, std=card.std
    )
    indices = next(iter(UniqueLocationBatchSampler(pairs.labels, conf.batch_size, seed=seed)))
    return torch.utils.data.default_collate([pairs[i] for i in indices])


def measure(conf, card, batch, checkpoint: Path | None) -> list[tuple[str, float, float, float]]:
    nets = GeoLinkNetworks(conf.model_copy(update={"sc_positive": "second_view"}), card)  # every view
    if checkpoint is not None:
        ckpt = read_checkpoint(checkpoint)
        nets.encoder.load_state_dict(ckpt["encoder"])
        nets.load_branch_state(ckpt["branch3d"])
    nets.eval()  # dropout off: the same features for every term
    feats = nets.features(batch)
    params = [p for p in nets.encoder.parameters() if p.requires_grad]
    scale = nets.loss_fn.logit_scale

    def grad_norm(value: torch.Tensor) -> float:
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads if g is not None])))

    ref = nets.loss_fn.cross_view(feats["dro"], feats["sat"])
    ref_grad = grad_norm(ref)
    rows = [("InfoNCE(dro, sat)", ref.item(), 1.0, 1.0)]
    for label, term, option in VARIANTS:
        weights = {t: conf.loss_weight(t) if t == term else 0.0 for t in ("cc", "sc", "ga", "rd")}
        loss = GeoLinkLoss(
            dim=nets.encoder.descriptor_dim,
            temperature=conf.temperature,
            cc_temperature=conf.cc_temperature,
            sc_temperature=conf.sc_temperature,
            symmetric=conf.infonce == "symmetric",
            label_smoothing=conf.label_smoothing,
            **weights,
            **option,
        )
        if scale is not None:
            with torch.no_grad():
                loss.logit_scale.copy_(scale)
        total, _ = loss(feats)
        rows.append((label, total.item(), total.item() / ref.item(), grad_norm(total) / ref_grad))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="training preset (tiny | paper)")
    parser.add_argument("--data", type=Path, help="dataset root with point clouds (default: a random batch)")
    parser.add_argument("--checkpoint", type=Path, help="trained weights (default: the preset's init)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3, help="batches to average over")
    args = parser.parse_args()
    publish_tables("Loss scales")
    conf = resolve_config(args.preset, overrides={"batch_size": args.batch_size})
    card = card_for_preset(conf.model, conf.backbone)
    if args.checkpoint is not None:  # the run's own architecture and options
        ckpt = read_checkpoint(args.checkpoint)
        conf = TrainConfig.model_validate({**ckpt["config"], "batch_size": args.batch_size})
        card = ModelCard.from_dict(ckpt["model_card"])
    torch.manual_seed(0)
    sums: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        if args.data:
            batch = data_batch(args.data, conf, card, seed)
        else:
            batch = random_batch(conf, card, torch.Generator().manual_seed(seed))
        for label, value, rel_value, rel_grad in measure(conf, card, batch, args.checkpoint):
            acc = sums.setdefault(label, [0.0, 0.0, 0.0])
            for i, v in enumerate((value, rel_value, rel_grad)):
                acc[i] += v / args.seeds
    source = f"{args.data} batches" if args.data else "random batches"
    weights = args.checkpoint or f"{args.preset} preset init"
    print(
        f"{args.seeds} {source} of {args.batch_size} locations, weights: {weights}; "
        "terms weighted as in the total"
    )
    print("| term | value | value / InfoNCE | encoder gradient norm / InfoNCE's |\n|---|---:|---:|---:|")
    for label, (value, rel_value, rel_grad) in sums.items():
        print(f"| {label} | {value:.3g} | {rel_value:.3g} | {rel_grad:.3g} |")


if __name__ == "__main__":
    main()
