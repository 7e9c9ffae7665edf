"""Training throughput: images/s of one full GeoLink step (all four losses, vCLUB fit included).

Variants: eager FP32, AMP (bf16 or fp16 on CUDA), AMP + channels-last, AMP + channels-last +
torch.compile. On a CPU only the FP32 rows run (AMP is a CUDA feature here). Random tensors stand
in for decoded images, so the figure is the networks' speed, not the loader's.

    python benchmarks/train_speed.py --preset tiny --steps 5
    python benchmarks/train_speed.py --preset paper --batch-size 8 --steps 20   # on a GPU
"""

from __future__ import annotations

import argparse
import time

import torch
from _results import publish_tables  # a sibling module: tables into RESULTS.md

from geolink_edge.errors import first_line
from geolink_edge.models.presets import card_for_preset
from geolink_edge.train.config import resolve_config
from geolink_edge.train.distributed import DistInfo
from geolink_edge.train.networks import GeoLinkNetworks
from geolink_edge.train.precision import Precision, pick_device
from geolink_edge.train.step import TrainStep


def random_batch(conf, card, generator: torch.Generator) -> dict[str, torch.Tensor]:
    h, w = card.image_size
    images = {
        k: torch.randn(conf.batch_size, 3, h, w, generator=generator)
        for k in ("drone", "drone2", "satellite", "satellite2")
    }
    points = {
        k: torch.rand(conf.batch_size, conf.points, 3, generator=generator) * 2 - 1
        for k in ("points", "points2")
    }
    return {**images, **points}


def images_per_step(conf) -> int:
    """Images through the encoder per step: drone + satellite, twice each with the second-view L_sc."""
    return conf.batch_size * (4 if conf.needs_second_views else 2)


def measure(preset: str, overrides: dict, steps: int, warmup: int) -> float:
    conf = resolve_config(preset, overrides=overrides)
    device = pick_device(conf.device)
    torch.manual_seed(0)
    card = card_for_preset(conf.model, conf.backbone)
    nets = GeoLinkNetworks(conf, card).to(device).train()
    step = TrainStep(conf, nets, Precision.choose(conf.amp, device), DistInfo(), steps + warmup, 0)
    batch = random_batch(conf, card, torch.Generator().manual_seed(0))
    for _ in range(warmup):
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images_per_step(conf) * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="training preset (tiny | paper)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    args = parser.parse_args()
    publish_tables("Training speed")
    base = {"batch_size": args.batch_size, "device": args.device}
    device = pick_device(args.device)
    variants = [("eager fp32", {"amp": "off"})]
    if args.no_compile is False and device.type == "cpu":
        variants.append(("fp32 + compile", {"amp": "off", "compile": True}))
    if device.type == "cuda":
        variants += [
            ("amp", {"amp": "auto"}),
            ("amp + channels_last", {"amp": "auto", "channels_last": True}),
        ]
        if not args.no_compile:
            variants.append(
                ("amp + channels_last + compile", {"amp": "auto", "channels_last": True, "compile": True})
            )
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    print(f"preset {args.preset}, batch {args.batch_size} locations, device {name}")
    print("| variant | images/s |\n|---|---|")
    for label, extra in variants:
        try:
            rate = measure(args.preset, {**base, **extra}, args.steps, args.warmup)
            print(f"| {label} | {rate:.1f} |", flush=True)
        except Exception as exc:  # a variant the platform cannot run is reported, not fatal
            print(f"| {label} | failed: {first_line(exc, 80)} |", flush=True)


if __name__ == "__main__":
    main()
