"""The ablation of the paper's Table 5 on the synthetic world, scored on two held-out splits.

* cross-style: the world's test split (held-out styles *and* areas), distractors kept;
* in-style: every 4th training place, kept out of training (the training styles and areas, unseen
  places), against the tiles of every training-style place.

Every variant is trained for each seed from the same init (``--pretrain-steps N``: a backbone
first trained N steps on the synthetic world with the 2D InfoNCE, the same for every run), and
compared *paired by seed*: every 3D variant with the baseline; every loss term also with "+MME"
(the 3D branch and L_cc without the term: what the term itself adds); the second-view rows (twice
the images per step) also with "+MME (2× steps)" (the same images seen). Each difference of
drone→satellite R@1 gets two 95 % intervals: t-based over the seeds (training noise, the test set
fixed) and a bootstrap over test places of the seed-averaged per-query differences (test-set
noise; the views of one place are not independent).

Pre-check, printed with the table: the Spearman rank correlation, over pairs of places, between
the distances of the untrained Point-NN features of their clouds and of their tiles' embeddings by
the baseline (seed 0) encoder. Near 0, L_rd has no relation to transfer, by construction. Beside
it, whether the untrained Point-NN tells two draws of each test cloud apart.

    python benchmarks/ablation.py --out A --quick        # minutes: tiny world, 1 seed
    python benchmarks/ablation.py --out A                # the CPU budget (see BUDGETS)
    python benchmarks/ablation.py --out A --gpu          # a longer run on a CUDA device
    python benchmarks/ablation.py --out A --seeds 3 --variants baseline,+MME --pretrain-steps 200
    python benchmarks/ablation.py --out A --report-only  # the tables of the runs done so far

Writes ``ablation.csv`` (one row per run, appended as runs finish: a rerun skips them), the
per-query hits of each run (``hits/*.npz``), ``ablation.md`` (the tables) and ``ablation.json``.
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
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from _results import publish_tables  # a sibling module: tables into RESULTS.md
from scipy import stats

from geolink_edge.atomic import write_json, write_text
from geolink_edge.card import ModelCard
from geolink_edge.data import pointclouds
from geolink_edge.data.datasets import open_dataset
from geolink_edge.data.layout import CrossViewData, ImageItem
from geolink_edge.metrics import evaluate_embeddings
from geolink_edge.models.checkpoint import read_checkpoint
from geolink_edge.models.pointnn import PointNN
from geolink_edge.train import trainer
from geolink_edge.train.config import TrainConfig, resolve_config
from geolink_edge.train.evaluate import embed_paths
from geolink_edge.train.networks import GeoLinkNetworks

ALL_TERMS = ["cc", "sc", "ga", "rd"]
# config overrides per variant; "steps_factor" multiplies the budget's steps
VARIANTS: dict[str, dict] = {
    "baseline": {"baseline": True},
    "+MME": {"losses": ["cc"]},
    "+MME (2× steps)": {"losses": ["cc"], "steps_factor": 2},
    "+L_ga": {"losses": ["cc", "ga"]},
    "+L_sc (paper: self)": {"losses": ["cc", "sc"], "sc_positive": "self"},
    "+L_sc (second view)": {"losses": ["cc", "sc"], "sc_positive": "second_view"},
    "+L_rd (paper scale)": {"losses": ["cc", "rd"], "rd_scale": "paper"},
    "+L_rd (mean scale)": {"losses": ["cc", "rd"], "rd_scale": "mean"},
    "full (paper forms)": {"losses": ALL_TERMS, "sc_positive": "self", "rd_scale": "paper"},
    # the named options chosen before the run, not picked afterwards from its results
    "full (best forms)": {"losses": ALL_TERMS, "sc_positive": "second_view", "rd_scale": "mean"},
}
THREE_D_ONLY = ("+MME", "+MME (2× steps)")  # 3D branch, no extra term
SPLITS = ("cross-style", "in-style")
IN_STYLE_EVERY = 4  # every 4th training place is held out for the in-style split
# world size and training length of each budget. cpu: 200 cross-style places × 25 views = 5000
# drone queries; training is capped in steps, not in images.
BUDGETS = {
    "cpu": {
        "synth": ["--locations", "400", "--views", "25", "--size", "96"],
        "seeds": 5,
        "train": {"epochs": 4, "steps_per_epoch": 50, "device": "cpu"},
    },
    "quick": {
        "synth": ["--locations", "32", "--views", "4", "--size", "96"],
        "seeds": 1,
        "train": {"epochs": 2, "steps_per_epoch": 4, "device": "cpu"},
    },
    "gpu": {
        "synth": ["--locations", "1000", "--views", "25", "--size", "128", "--workers", "8"],
        "seeds": 5,
        "train": {"epochs": 10, "steps_per_epoch": 200, "device": "cuda", "workers": 4},
    },
}


# --- statistics (tests/test_ablation_stats.py) ---------------------------------------------------


def comparisons(variants: Sequence[str]) -> list[tuple[str, str]]:
    """(variant, reference) pairs: each 3D variant vs the baseline, each loss term vs "+MME", the
    second-view rows vs the compute-matched "+MME (2× steps)"."""
    pairs = []
    for v in variants:
        if v == "baseline":
            continue
        pairs.append((v, "baseline"))
        if v not in THREE_D_ONLY:
            pairs.append((v, "+MME"))
        if VARIANTS[v].get("sc_positive") == "second_view" and "sc" in VARIANTS[v]["losses"]:
            pairs.append((v, "+MME (2× steps)"))
    return [(v, ref) for v, ref in pairs if ref in variants]


def paired(rows: list[dict], variant: str, reference: str, column: str) -> tuple[list[int], np.ndarray]:
    """Seeds both runs have, and the per-seed differences ``variant − reference`` of ``column``."""
    mine = {r["seed"]: float(r[column]) for r in rows if r["variant"] == variant and r.get(column, "") != ""}
    theirs = {r["seed"]: float(r[column]) for r in rows if r["variant"] == reference}
    seeds = sorted(set(mine) & set(theirs))
    return seeds, np.array([mine[s] - theirs[s] for s in seeds])


def t_interval(diffs: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Mean of the paired differences and the half-width of its t-based interval (NaN for 1 seed)."""
    n = len(diffs)
    if n < 2:
        return float(diffs.mean()) if n else float("nan"), float("nan")
    half = stats.t.ppf((1 + level) / 2, n - 1) * diffs.std(ddof=1) / np.sqrt(n)
    return float(diffs.mean()), float(half)


def place_bootstrap(
    diff: np.ndarray, places: Sequence[str], draws: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile interval of 100·mean(``diff``) (per-query differences) when the test places are
    drawn with replacement, each with all of its queries."""
    _, index = np.unique(np.asarray(places), return_inverse=True)
    sums = np.bincount(index, weights=diff)
    counts = np.bincount(index).astype(float)
    pick = np.random.default_rng(seed).integers(0, len(sums), size=(draws, len(sums)))
    means = 100 * sums[pick].sum(axis=1) / counts[pick].sum(axis=1)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def distance_rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation, over pairs of rows, between the Euclidean distances of the unit-length
    rows of ``a`` and of ``b`` (row i of both: one place)."""
    upper = np.triu_indices(len(a), k=1)

    def distances(rows: np.ndarray) -> np.ndarray:
        rows = unit(rows.astype(np.float64))
        return np.linalg.norm(rows[:, None] - rows[None], axis=-1)[upper]

    return float(stats.spearmanr(distances(a), distances(b)).statistic)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def top1_hits(query: np.ndarray, q_labels, gallery: np.ndarray, g_labels) -> np.ndarray:
    """Per query: is the nearest gallery item of the right location (what R@1 averages)."""
    best = np.argmax(query @ gallery.T, axis=1)
    return np.asarray(g_labels)[best] == np.asarray(q_labels)


# --- data ----------------------------------------------------------------------------------------


def make_world(root: Path, args: list[str]) -> Path:
    if not (root / "dataset.json").is_file():
        cmd = [sys.executable, "-m", "geolink_edge.cli", "synth", str(root), *args, "--force"]
        subprocess.run(cmd, check=True)
    return root


def in_style_places(world: CrossViewData) -> list[str]:
    return sorted(world.train_drone)[::IN_STYLE_EVERY]


def in_style_split(world: CrossViewData, held: list[str]) -> CrossViewData:
    """Drone views of the held-out training places against the tiles of every training place."""
    return dataclasses.replace(
        world,
        query_drone=[ImageItem(p, loc) for loc in held for p in world.train_drone[loc]],
        gallery_satellite=[
            ImageItem(p, loc) for loc, ps in sorted(world.train_satellite.items()) for p in ps
        ],
        query_satellite=[],
        gallery_drone=[],
    )


def training_view(world: Path, view: Path, held: set[str]) -> Path:
    """The world's training places without the held-out ones and without the test split (the
    trainer's end-of-run validation would embed every query again; each run is scored here)."""
    view.mkdir(parents=True, exist_ok=True)
    for name in ("dataset.json", "gps.csv", "pointclouds"):
        if (world / name).exists() and not (view / name).exists():
            (view / name).symlink_to((world / name).resolve())
    for kind in ("drone", "satellite"):
        folder = view / "train" / kind
        folder.mkdir(parents=True, exist_ok=True)
        for place in sorted((world / "train" / kind).iterdir()):
            if place.name not in held and not (folder / place.name).exists():
                (folder / place.name).symlink_to(place.resolve())
    return view


def subsample_queries(data: CrossViewData, count: int | None) -> CrossViewData:
    """Keep ``count`` drone queries spread evenly over the test places (all when None)."""
    if count is None or count >= len(data.query_drone):
        return data
    keep = np.linspace(0, len(data.query_drone) - 1, count).round().astype(int)
    return dataclasses.replace(data, query_drone=[data.query_drone[i] for i in keep])


def cloud_batch(data: CrossViewData, locations: list[str], n_points: int, seed: int = 0) -> torch.Tensor:
    """A fixed random draw of ``n_points`` of each location's stored cloud (as training draws them)."""
    draws = []
    for loc in locations:
        xyz = pointclouds.load(data.pointcloud_dir / f"{loc}.npz")
        pick = np.random.default_rng([seed, int(loc)]).choice(len(xyz), n_points, len(xyz) < n_points)
        draws.append(xyz[pick])
    return torch.from_numpy(np.stack(draws).astype(np.float32))


# --- runs ----------------------------------------------------------------------------------------


def load_networks(run: Path, device: str) -> tuple[GeoLinkNetworks, TrainConfig, ModelCard]:
    """The trained encoder and 3D branch of a run's ``last.pt``."""
    ckpt = read_checkpoint(run / "last.pt")
    conf = TrainConfig.model_validate(ckpt["config"])
    card = ModelCard.from_dict(ckpt["model_card"])
    nets = GeoLinkNetworks(conf.model_copy(update={"pretrained": False, "weights": None}), card)
    nets.encoder.load_state_dict(ckpt["encoder"])
    nets.load_branch_state(ckpt["branch3d"])
    return nets.to(device).eval(), conf, card


def embedder(run: Path, device: str):
    nets, _, card = load_networks(run, device)
    return lambda paths: embed_paths(nets.encoder, card, paths, batch_size=64, device=device, quiet=True)


def score_split(embed, data: CrossViewData) -> tuple[dict, np.ndarray]:
    """Both image directions of one split, and the per-query drone→satellite top-1 hits."""
    drone = embed([q.path for q in data.query_drone])
    d_labels = [q.location for q in data.query_drone]
    sat = embed([g.path for g in data.gallery_satellite])
    s_labels = np.asarray([g.location for g in data.gallery_satellite])
    d2s = evaluate_embeddings(drone, d_labels, sat, s_labels)
    # satellite→drone: the tiles of the query places against their drone views
    has_views = np.isin(s_labels, d_labels)
    s2d = evaluate_embeddings(sat[has_views], s_labels[has_views], drone, d_labels)
    scores = {"d2s R@1": d2s["R@1"], "d2s AP": d2s["AP"], "s2d R@1": s2d["R@1"]}
    return scores, top1_hits(drone, d_labels, sat, s_labels)


def run_one(
    splits: dict[str, CrossViewData], train_root: Path, out: Path, variant: str, seed: int, train: dict
):
    overrides = {k: v for k, v in VARIANTS[variant].items() if k != "steps_factor"}
    steps = train["steps_per_epoch"] * VARIANTS[variant].get("steps_factor", 1)
    conf = resolve_config("tiny", overrides={**train, **overrides, "steps_per_epoch": steps, "seed": seed})
    slug = f"{variant_slug(variant)}-seed{seed}"
    started = time.perf_counter()
    run = trainer.main(conf, train_root, out / "runs" / slug, force=True, quiet=True)
    train_s = time.perf_counter() - started
    embed = embedder(run, conf.device)
    pretrain = Path(conf.weights).stem.removeprefix("backbone-") if conf.weights else "0"
    row: dict = {"variant": variant, "seed": seed, "steps": conf.epochs * steps, "pretrain steps": pretrain}
    hits = {}
    for name, data in splits.items():
        scores, hits[name] = score_split(embed, data)
        row.update({f"{name} {k}": v for k, v in scores.items()})
    (out / "hits").mkdir(exist_ok=True)
    np.savez(out / "hits" / f"{slug}.npz", **{k.replace("-", "_"): v for k, v in hits.items()})
    return {**row, "train s": round(train_s, 1), "total s": round(time.perf_counter() - started, 1)}


def variant_slug(variant: str) -> str:
    return "".join(c if c.isalnum() or c in "+_" else "_" for c in variant.replace("×", "x"))


def pretrain_backbone(train_root: Path, out: Path, steps: int, train: dict) -> Path:
    """A backbone trained ``steps`` steps with the 2D InfoNCE (all blocks) on the training places:
    the start of every run's encoder. Written once; reused while the file is there."""
    weights = out / "pretrain" / f"backbone-{steps}.pt"
    if weights.is_file():
        return weights
    overrides = {**train, "baseline": True, "freeze_blocks": 0, "epochs": 1, "steps_per_epoch": steps}
    conf = resolve_config("tiny", overrides={**overrides, "seed": 10_000})
    run = trainer.main(conf, train_root, out / "pretrain" / "run", force=True, quiet=True)
    nets, _, _ = load_networks(run, "cpu")
    partial = weights.with_suffix(".part")
    torch.save(nets.encoder.backbone.state_dict(), partial)
    partial.replace(weights)
    return weights


# --- pre-check -----------------------------------------------------------------------------------


@torch.inference_mode()
def pointnn_features(data: CrossViewData, places: list[str], conf: TrainConfig, seed: int = 0) -> np.ndarray:
    pointnn = PointNN(stages=conf.point_stages, embed_dim=conf.point_dim, k=conf.point_k)
    clouds = cloud_batch(data, places, conf.points, seed)
    return torch.cat([pointnn(part) for part in clouds.split(16)]).numpy()


def pre_check(world: CrossViewData, splits: dict[str, CrossViewData], baseline_run: Path) -> dict:
    """Point-NN vs tile-embedding distance rank correlation per split (and over the training
    places), and the untrained Point-NN's R@1 between two draws of each cross-style cloud."""
    conf = resolve_config("tiny")
    embed = embedder(baseline_run, "cpu")
    groups = {"training-style places": sorted(world.train_satellite)}
    groups.update({name: sorted({q.location for q in data.query_drone}) for name, data in splits.items()})
    tiles = {**world.train_satellite, **{g.location: [g.path] for g in world.gallery_satellite}}
    out: dict = {"rank correlation": {}}
    for name, places in groups.items():
        tile_emb = embed([tiles[p][0] for p in places])
        rho = distance_rank_correlation(pointnn_features(world, places, conf), tile_emb)
        out["rank correlation"][name] = {"places": len(places), "spearman": rho}
    test = groups["cross-style"]
    a, b = (unit(pointnn_features(world, test, conf, seed)) for seed in (0, 1))
    out["pc2pc R@1 cross-style"] = evaluate_embeddings(a, test, b, test)["R@1"]
    return out


# --- tables --------------------------------------------------------------------------------------


def mean_std(values: np.ndarray) -> str:
    if not len(values):
        return "—"
    return f"{values.mean():.1f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.1f}"


def interval_text(mean: float, half: float) -> str:
    if np.isnan(half):
        return f"{mean:+.1f} (1 seed)"
    return f"{mean:+.1f} [{mean - half:+.1f}, {mean + half:+.1f}]"


def read_hits(out: Path, variant: str, seed: int, split: str) -> np.ndarray:
    with np.load(out / "hits" / f"{variant_slug(variant)}-seed{seed}.npz", allow_pickle=False) as f:
        return f[split.replace("-", "_")].astype(float)


def score_table(rows: list[dict]) -> str:
    header = ["variant", "seeds"] + [f"{s} {c}" for s in SPLITS for c in ("d2s R@1", "d2s AP", "s2d R@1")]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        if mine:
            cells = [variant, str(len(mine))]
            cells += [mean_std(np.array([float(r[c]) for r in mine])) for c in header[2:]]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def difference_table(rows: list[dict], out: Path, places: dict[str, list[str]]) -> str:
    """Paired differences of d2s R@1, t and place-bootstrap 95 % intervals, for both splits."""
    header = ["variant", "vs", "seeds"] + [
        f"{s} {k}" for s in SPLITS for k in ("Δ R@1 [t 95 %]", "bootstrap 95 %")
    ]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    present = [v for v in VARIANTS if any(r["variant"] == v for r in rows)]
    for variant, reference in comparisons(present):
        cells = [variant, reference]
        for split in SPLITS:
            seeds, diffs = paired(rows, variant, reference, f"{split} d2s R@1")
            if not seeds:
                cells += ["—", "—"]
                continue
            per_query = np.mean(
                [read_hits(out, variant, s, split) - read_hits(out, reference, s, split) for s in seeds],
                axis=0,
            )
            low, high = place_bootstrap(per_query, places[split])
            cells += [interval_text(*t_interval(diffs)), f"[{low:+.1f}, {high:+.1f}]"]
        cells.insert(2, str(len(seeds)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def footnote(rows: list[dict], splits: dict[str, CrossViewData], check: dict, world: str) -> str:
    sizes = ", ".join(
        f"{name}: {len(d.query_drone)} drone queries of {len({q.location for q in d.query_drone})} places, "
        f"{len(d.gallery_satellite)} tiles"
        for name, d in splits.items()
    )
    rho = check["rank correlation"]
    rhos = "; ".join(f"{name} ({v['places']} places) {v['spearman']:+.2f}" for name, v in rho.items())
    minutes = sum(float(r["total s"]) for r in rows) / 60
    steps = "/".join(sorted({str(r["steps"]) for r in rows}, key=int))
    pretrain = "/".join(sorted({str(r.get("pretrain steps", "0")) for r in rows}))
    return (
        f"\nd2s = drone→satellite, s2d = satellite→drone, %; mean ± std over seeds. {sizes}. "
        f"Δ: paired by seed, mean [t-based 95 % interval over seeds]; bootstrap: 95 % interval over "
        f"test places (2000 draws) of the seed-averaged per-query differences. "
        f"Pre-check, Spearman ρ between untrained Point-NN and baseline (seed 0) tile-embedding "
        f"distances over pairs of places: {rhos}. Untrained Point-NN, two draws of each cross-style "
        f"cloud: R@1 {check['pc2pc R@1 cross-style']:.1f}.\n"
        f"World: {world}; training: tiny preset, {steps} steps of 8 places after {pretrain} steps "
        f"pretraining the backbone; "
        f"{minutes:.0f} min of runs.\n"
    )


def to_csv(rows: list[dict]) -> str:
    fields = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [{**r, "seed": int(r["seed"])} for r in csv.DictReader(path.read_text().splitlines())]


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
    parser.add_argument("--pretrain-steps", type=int, default=0, help="pretrain the 2D backbone first")
    parser.add_argument("--queries", type=int, help="score on this many cross-style queries (default: all)")
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
    held = in_style_places(world)
    splits = {"cross-style": subsample_queries(world, args.queries), "in-style": in_style_split(world, held)}
    train_root = training_view(world.root, args.out / "train-view", set(held))
    if args.pretrain_steps:
        train["weights"] = str(pretrain_backbone(train_root, args.out, args.pretrain_steps, train))
    csv_path = args.out / "ablation.csv"
    rows = read_rows(csv_path)
    # seed-major: a run stopped early leaves whole seeds, each pairable with its references
    for seed in range(0 if args.report_only else args.seeds or budget["seeds"]):
        for variant in variants:
            if any(r["variant"] == variant and r["seed"] == seed for r in rows):
                continue
            rows.append(run_one(splits, train_root, args.out, variant, seed, train))
            write_text(csv_path, to_csv(rows))
            print(f"{variant} seed {seed}: " + json.dumps(rows[-1]), flush=True)
    if not rows:
        parser.error(f"no runs in {csv_path}")
    check = pre_check(world, splits, args.out / "runs" / "baseline-seed0")
    places = {name: [q.location for q in data.query_drone] for name, data in splits.items()}
    described = " ".join(budget["synth"]) if not args.data else str(args.data)
    text = (
        score_table(rows)
        + "\n"
        + difference_table(rows, args.out, places)
        + footnote(rows, splits, check, f"synth {described}")
    )
    write_text(args.out / "ablation.md", text)
    write_json(args.out / "ablation.json", {"runs": rows, "pre_check": check})
    print(text)


if __name__ == "__main__":
    main()
