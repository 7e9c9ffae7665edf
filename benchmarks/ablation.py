"""The ablation of the paper's Table 5 on a synthetic cross-area set (train styles ≠ test styles).

Every variant is trained from the same random init for each seed and scored on the same test split
(distractors kept), so a variant is compared with the baseline *paired by seed*: the table gives
mean ± std over seeds and the mean paired difference to the baseline ± its standard error. The
test split is large enough that one binomial standard error of R@1 is under a point; the
location-clustered one (views of one place are not independent) is printed beside it.

Why the 3D terms help or not: for every 3D variant the trained 3D branch itself is scored,
point cloud → satellite tile R@1 on the training and on the test locations (is it learning? does it
generalise?), once per world the untrained Point-NN tells apart two draws of each test cloud
(are the clouds informative at all?), and a closed-form linear probe maps clouds to the baseline's
tile embeddings (could any linear 3D head generalise, whatever the training budget?).

    python benchmarks/ablation.py --out A --quick        # minutes: tiny world, 1 seed
    python benchmarks/ablation.py --out A                # the CPU budget (see BUDGETS)
    python benchmarks/ablation.py --out A --gpu          # a longer run on a CUDA device
    python benchmarks/ablation.py --out A --seeds 3 --variants baseline,+MME
    python benchmarks/ablation.py --out A --data A/world --steps 8 --queries 500   # a busy CPU
    python benchmarks/ablation.py --out A --report-only  # the tables of the runs done so far

Writes ``ablation.csv`` (one row per run, appended as runs finish: a rerun skips them),
``ablation.md`` (the tables) and ``ablation.json``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _results import publish_tables  # a sibling module: tables into RESULTS.md

from geolink_edge.atomic import write_json, write_text
from geolink_edge.card import ModelCard
from geolink_edge.data import pointclouds
from geolink_edge.data.datasets import open_dataset
from geolink_edge.data.layout import CrossViewData
from geolink_edge.metrics import evaluate_embeddings
from geolink_edge.models.checkpoint import read_checkpoint
from geolink_edge.models.pointnn import PointNN
from geolink_edge.train import trainer
from geolink_edge.train.config import TrainConfig, resolve_config
from geolink_edge.train.evaluate import embed_paths
from geolink_edge.train.networks import GeoLinkNetworks

ALL_TERMS = ["cc", "sc", "ga", "rd"]
VARIANTS: dict[str, dict] = {
    "baseline": {"baseline": True},
    "+MME": {"losses": ["cc"]},
    "+L_ga": {"losses": ["cc", "ga"]},
    "+L_sc (paper: self)": {"losses": ["cc", "sc"], "sc_positive": "self"},
    "+L_sc (second view)": {"losses": ["cc", "sc"], "sc_positive": "second_view"},
    "+L_rd (paper scale)": {"losses": ["cc", "rd"], "rd_scale": "paper"},
    "+L_rd (mean scale)": {"losses": ["cc", "rd"], "rd_scale": "mean"},
    "full (paper forms)": {"losses": ALL_TERMS, "sc_positive": "self", "rd_scale": "paper"},
    # the named options chosen before the run, not picked afterwards from its results
    "full (best forms)": {"losses": ALL_TERMS, "sc_positive": "second_view", "rd_scale": "mean"},
}
# world size and training length of each budget. cpu: 100 test places × 25 views = 2500 drone
# queries (binomial SE ≤ 1 point at any R@1); training is capped in steps, not in images.
BUDGETS = {
    "cpu": {
        "synth": ["--locations", "200", "--views", "25", "--size", "128"],
        "seeds": 5,
        "train": {"epochs": 4, "steps_per_epoch": 50, "device": "cpu"},
    },
    "quick": {
        "synth": ["--locations", "24", "--views", "4", "--size", "128"],
        "seeds": 1,
        "train": {"epochs": 2, "steps_per_epoch": 4, "device": "cpu"},
    },
    "gpu": {
        "synth": ["--locations", "400", "--views", "25", "--size", "128", "--workers", "8"],
        "seeds": 5,
        "train": {"epochs": 10, "steps_per_epoch": 200, "device": "cuda", "workers": 4},
    },
}


def make_world(root: Path, args: list[str]) -> Path:
    if not (root / "dataset.json").is_file():
        cmd = [sys.executable, "-m", "geolink_edge.cli", "synth", str(root), *args, "--force"]
        subprocess.run(cmd, check=True)
    return root


def load_networks(run: Path, device: str) -> tuple[GeoLinkNetworks, TrainConfig, ModelCard, int]:
    """The trained encoder and 3D branch of a run's ``last.pt``, and the steps it was trained for."""
    ckpt = read_checkpoint(run / "last.pt")
    conf = TrainConfig.model_validate(ckpt["config"])
    card = ModelCard.from_dict(ckpt["model_card"])
    nets = GeoLinkNetworks(conf.model_copy(update={"pretrained": False, "weights": None}), card)
    nets.encoder.load_state_dict(ckpt["encoder"])
    nets.load_branch_state(ckpt["branch3d"])
    return nets.to(device).eval(), conf, card, int(ckpt["step"])


def cloud_batch(data: CrossViewData, locations: list[str], n_points: int, seed: int = 0) -> torch.Tensor:
    """A fixed random draw of ``n_points`` of each location's stored cloud (as training draws them)."""
    draws = []
    for loc in locations:
        xyz = pointclouds.load(data.pointcloud_dir / f"{loc}.npz")
        pick = np.random.default_rng([seed, int(loc)]).choice(len(xyz), n_points, len(xyz) < n_points)
        draws.append(xyz[pick])
    return torch.from_numpy(np.stack(draws).astype(np.float32))


@torch.inference_mode()
def cloud_descriptors(nets: GeoLinkNetworks, clouds: torch.Tensor, device: str) -> np.ndarray:
    feats = nets.features
    out = [feats.branch3d(feats.pointnn(part.to(device))) for part in clouds.split(32)]
    return torch.nn.functional.normalize(torch.cat(out), dim=1).cpu().numpy()


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def top1_hits(query: np.ndarray, q_labels, gallery: np.ndarray, g_labels) -> np.ndarray:
    """Per query: is the nearest gallery item of the right location (what R@1 averages)."""
    best = np.argmax(query @ gallery.T, axis=1)
    return np.asarray(g_labels)[best] == np.asarray(q_labels)


def standard_errors(hits: np.ndarray, labels) -> tuple[float, float]:
    """(binomial SE, location-clustered SE) of the mean of ``hits``, in points."""
    p = hits.mean()
    binomial = np.sqrt(p * (1 - p) / len(hits))
    per_location = np.array([hits[np.asarray(labels) == loc].mean() for loc in np.unique(labels)])
    clustered = per_location.std(ddof=1) / np.sqrt(len(per_location))
    return 100 * float(binomial), 100 * float(clustered)


def score_run(run: Path, data: CrossViewData, device: str) -> dict:
    """Both image directions, and the 3D branch's own pc → satellite R@1 (train and test places)."""
    nets, conf, card, steps = load_networks(run, device)

    def embed(paths):
        return embed_paths(nets.encoder, card, paths, batch_size=64, device=device, quiet=True)

    drone = embed([q.path for q in data.query_drone])
    d_labels = [q.location for q in data.query_drone]
    sat = embed([g.path for g in data.gallery_satellite])
    s_labels = [g.location for g in data.gallery_satellite]
    # the query satellite tiles and the gallery drone views are the same files as the ones above
    d2s = evaluate_embeddings(drone, d_labels, sat, s_labels)
    s2d = evaluate_embeddings(
        sat[np.isin(s_labels, d_labels)], np.asarray(s_labels)[np.isin(s_labels, d_labels)], drone, d_labels
    )
    se, se_clustered = standard_errors(top1_hits(drone, d_labels, sat, s_labels), d_labels)
    row = {
        "d2s R@1": d2s["R@1"],
        "d2s AP": d2s["AP"],
        "s2d R@1": s2d["R@1"],
        "s2d AP": s2d["AP"],
        "steps": steps,
        "queries": d2s["queries"],
        "gallery": d2s["gallery"],
        "SE binomial": se,
        "SE clustered": se_clustered,
    }
    if nets.features.pointnn is not None:
        test = sorted(set(d_labels))
        row["pc2sat R@1 test"] = evaluate_embeddings(
            cloud_descriptors(nets, cloud_batch(data, test, conf.points), device), test, sat, s_labels
        )["R@1"]
        train = sorted(data.train_satellite)
        train_sat = embed([data.train_satellite[loc][0] for loc in train])
        row["pc2sat R@1 train"] = evaluate_embeddings(
            cloud_descriptors(nets, cloud_batch(data, train, conf.points), device), train, train_sat, train
        )["R@1"]
    return row


@torch.inference_mode()
def cloud_separability(data: CrossViewData, conf: TrainConfig) -> dict:
    """Can the untrained Point-NN tell the test places apart from their clouds alone?

    R@1 between two independent draws of each test cloud, raw and centred on the mean feature, and
    the mean cosine between the clouds of one place and of different places (both near 1: a common
    component dominates what the clouds carry).
    """
    test = sorted({q.location for q in data.query_drone})
    pointnn = PointNN(stages=conf.point_stages, embed_dim=conf.point_dim, k=conf.point_k)
    a, b = (
        unit(
            torch.cat(
                [pointnn(part) for part in cloud_batch(data, test, conf.points, seed).split(16)]
            ).numpy()
        )
        for seed in (0, 1)
    )
    cosine = a @ b.T
    others = cosine[~np.eye(len(test), dtype=bool)]
    centre = np.concatenate([a, b]).mean(axis=0)
    return {
        "places": len(test),
        "pc2pc R@1": evaluate_embeddings(a, test, b, test)["R@1"],
        "pc2pc R@1 centred": evaluate_embeddings(unit(a - centre), test, unit(b - centre), test)["R@1"],
        "cosine other places": float(others.mean()),
        "cosine same place": float(np.diag(cosine).mean()),
    }


POINTNN_SIZES = {"tiny": {}, "paper": {"point_stages": 4, "point_dim": 72, "point_k": 90, "points": 1024}}


@torch.inference_mode()
def cloud_probe(data: CrossViewData, run: Path, ridge: float = 1.0, draws: int = 4) -> dict:
    """Could any linear 3D head generalise? A closed-form ridge map from the untrained Point-NN
    features (standardised; tiny and paper sizes) of ``draws`` draws of each training cloud to its
    tile's embedding by ``run``'s image encoder, then R@1 of the mapped test clouds against the test
    gallery and of the mapped training clouds against their own tiles: no SGD budget involved."""
    nets, conf, card, _ = load_networks(run, "cpu")

    def embed(paths):
        return embed_paths(nets.encoder, card, paths, batch_size=64, device="cpu", quiet=True)

    test = sorted({q.location for q in data.query_drone})
    train = sorted(data.train_satellite)
    gallery = embed([g.path for g in data.gallery_satellite])
    g_labels = [g.location for g in data.gallery_satellite]
    train_sat = embed([data.train_satellite[loc][0] for loc in train])
    out = {}
    for size, update in POINTNN_SIZES.items():
        c = conf.model_copy(update=update)
        pointnn = PointNN(stages=c.point_stages, embed_dim=c.point_dim, k=c.point_k)

        def features(locations, seed, pointnn=pointnn, c=c):
            clouds = cloud_batch(data, locations, c.points, seed)
            return torch.cat([pointnn(part) for part in clouds.split(16)]).numpy().astype(np.float64)

        x = np.concatenate([features(train, seed) for seed in range(draws)])
        mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
        design = lambda f, mean=mean, std=std: np.c_[(f - mean) / std, np.ones(len(f))]  # noqa: E731
        a = design(x)
        weights = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ np.tile(train_sat, (draws, 1)))
        mapped_test = unit(design(features(test, draws)) @ weights)
        out[f"{size} test"] = evaluate_embeddings(mapped_test, test, gallery, g_labels)["R@1"]
        out[f"{size} train"] = evaluate_embeddings(unit(a[: len(train)] @ weights), train, train_sat, train)[
            "R@1"
        ]
    return out


def training_view(world: Path, view: Path) -> Path:
    """The world without its test split, for the trainer: its end-of-run validation would embed
    every query a second time (each run is scored here, once)."""
    view.mkdir(parents=True, exist_ok=True)
    for name in ("dataset.json", "gps.csv", "train", "pointclouds"):
        if not (view / name).exists():
            (view / name).symlink_to((world / name).resolve())
    return view


def run_one(data: CrossViewData, train_root: Path, runs: Path, variant: str, seed: int, train: dict) -> dict:
    conf = resolve_config("tiny", overrides={**train, **VARIANTS[variant], "seed": seed})
    slug = variant.replace(" ", "_").replace(":", "").replace("(", "").replace(")", "")
    started = time.perf_counter()
    run = trainer.main(conf, train_root, runs / f"{slug}-seed{seed}", force=True, quiet=True)
    train_s = time.perf_counter() - started
    row = {"variant": variant, "seed": seed, **score_run(run, data, conf.device)}
    return {**row, "train s": round(train_s, 1), "total s": round(time.perf_counter() - started, 1)}


def subsample_queries(data: CrossViewData, count: int | None) -> CrossViewData:
    """Keep ``count`` drone queries spread evenly over the test places (all when None)."""
    if count is None or count >= len(data.query_drone):
        return data
    keep = np.linspace(0, len(data.query_drone) - 1, count).round().astype(int)
    return dataclasses.replace(data, query_drone=[data.query_drone[i] for i in keep])


def paired(rows: list[dict], variant: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Scores of ``variant`` and of the baseline over the seeds both have, in seed order."""
    by_seed = {r["seed"]: r for r in rows if r["variant"] == variant and r.get(column) != ""}
    base = {r["seed"]: r for r in rows if r["variant"] == "baseline"}
    seeds = sorted(set(by_seed) & set(base))
    return (
        np.array([float(by_seed[s][column]) for s in seeds]),
        np.array([float(base[s][column]) for s in seeds]),
    )


def mean_std(values: np.ndarray) -> str:
    if not len(values):
        return "—"
    return f"{values.mean():.1f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.1f}"


def difference(values: np.ndarray, base: np.ndarray) -> str:
    """Mean paired difference ± its standard error (std of the differences / √seeds)."""
    if not len(values):
        return "—"
    diff = values - base
    if len(diff) == 1:
        return f"{diff[0]:+.1f} (1 seed)"
    return f"{diff.mean():+.1f} ± {diff.std(ddof=1) / np.sqrt(len(diff)):.1f}"


def table(rows: list[dict]) -> str:
    header = ["variant", "seeds"]
    for column in ("d2s R@1", "d2s AP", "s2d R@1"):
        header += [column, f"Δ {column}"]
    header += ["pc→sat R@1 test", "pc→sat R@1 train"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        if not mine:
            continue
        cells = [variant, str(len(mine))]
        for column in ("d2s R@1", "d2s AP", "s2d R@1"):
            values = np.array([float(r[column]) for r in mine])
            cells += [
                mean_std(values),
                "—" if variant == "baseline" else difference(*paired(rows, variant, column)),
            ]
        for column in ("pc2sat R@1 test", "pc2sat R@1 train"):
            cells.append(mean_std(np.array([float(r[column]) for r in mine if r.get(column, "") != ""])))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def footnote(rows: list[dict], separability: dict, probe: dict, train: dict, synth: list[str]) -> str:
    first = rows[0]
    se = np.mean([float(r["SE binomial"]) for r in rows])
    se_clustered = np.mean([float(r["SE clustered"]) for r in rows])
    minutes = sum(float(r["total s"]) for r in rows) / 60
    planned = train["epochs"] * train["steps_per_epoch"] if train.get("steps_per_epoch") else "?"
    steps = "/".join(sorted({str(r.get("steps") or planned) for r in rows}))
    clouds = separability
    return (
        f"\nd2s = drone→satellite ({first['queries']} queries, {first['gallery']} tiles with distractors; "
        f"chance R@1 {100 / int(first['gallery']):.1f}), s2d = satellite→drone, %. mean ± std over seeds; "
        f"Δ = paired difference to the baseline of the same seed ± its standard error. One run's standard "
        f"error of d2s R@1: {se:.2f} points binomial, {se_clustered:.2f} clustered by place. "
        f"pc→sat = the trained 3D branch's cloud → satellite-tile R@1 (test: query places against the "
        f"test gallery; train: training places against their tiles). Untrained Point-NN on the "
        f"{clouds['places']} test clouds: R@1 {clouds['pc2pc R@1']:.1f} between two draws of each cloud "
        f"({clouds['pc2pc R@1 centred']:.1f} centred on the mean feature), cosine "
        f"{clouds['cosine same place']:.3f} same place vs {clouds['cosine other places']:.3f} other places. "
        f"Linear probe (ridge, closed form) from untrained Point-NN features of the training clouds to "
        f"the baseline (seed 0) encoder's tile embeddings, cloud → satellite R@1 on test / training "
        f"places: tiny Point-NN {probe['tiny test']:.1f} / {probe['tiny train']:.1f}, paper-size "
        f"{probe['paper test']:.1f} / {probe['paper train']:.1f}.\n"
        f"World: synth {' '.join(synth)}; training: tiny preset, {train}, {steps} steps of 8 places; "
        f"{minutes:.0f} min of runs.\n"
    )


def to_csv(rows: list[dict]) -> str:
    fields = list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = list(csv.DictReader(path.read_text().splitlines()))
    return [{**r, "seed": int(r["seed"])} for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="work folder (world, runs, tables)")
    parser.add_argument("--data", type=Path, help="an existing synthetic dataset (default: make one)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny world, 1 seed, a few steps")
    size.add_argument("--gpu", action="store_true", help="larger world and longer training on CUDA")
    parser.add_argument("--seeds", type=int, help="override the number of seeds")
    parser.add_argument("--epochs", type=int, help="override the epochs")
    parser.add_argument("--steps", type=int, help="override the steps per epoch")
    parser.add_argument("--queries", type=int, help="score on this many drone queries (default: all)")
    parser.add_argument("--report-only", action="store_true", help="tables from ablation.csv, no training")
    parser.add_argument("--variants", help=f"comma-separated subset of: {', '.join(VARIANTS)}")
    args = parser.parse_args()
    publish_tables("Ablation of the GeoLink losses")
    budget = BUDGETS["quick" if args.quick else "gpu" if args.gpu else "cpu"]
    train = dict(budget["train"])
    train.update({k: v for k, v in (("epochs", args.epochs), ("steps_per_epoch", args.steps)) if v})
    variants = [v.strip() for v in args.variants.split(",")] if args.variants else list(VARIANTS)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]!r}")
    if "baseline" not in variants:
        variants.insert(0, "baseline")  # every comparison is paired with it
    world = open_dataset(args.data or make_world(args.out / "world", budget["synth"]))
    data = subsample_queries(world, args.queries)
    train_root = training_view(world.root, args.out / "train-only")
    csv_path = args.out / "ablation.csv"
    rows = read_rows(csv_path)
    # seed-major: a run stopped early leaves whole seeds, each pairable with its baseline
    for seed in range(0 if args.report_only else args.seeds or budget["seeds"]):
        for variant in variants:
            if any(r["variant"] == variant and r["seed"] == seed for r in rows):
                continue
            rows.append(run_one(data, train_root, args.out / "runs", variant, seed, train))
            write_text(csv_path, to_csv(rows))
            print(f"{variant} seed {seed}: " + json.dumps(rows[-1]), flush=True)
    if not rows:
        parser.error(f"no runs in {csv_path}")
    separability = cloud_separability(data, resolve_config("tiny"))
    probe = cloud_probe(data, args.out / "runs" / "baseline-seed0")
    text = table(rows) + footnote(
        rows, separability, probe, train, budget["synth"] if not args.data else [str(args.data)]
    )
    write_text(args.out / "ablation.md", text)
    record = {"runs": rows, "clouds": separability, "probe": probe, "train": train}
    write_json(args.out / "ablation.json", record)
    print(text)


if __name__ == "__main__":
    main()
