"""Evaluation of a 2D encoder on a dataset's test split: both directions, per height, under weather.

Descriptors are computed here (torch); the scores come from :mod:`geolink_edge.metrics` (numpy), so
descriptors from an exported model are scored by the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from geolink_edge.atomic import write_json
from geolink_edge.card import ModelCard
from geolink_edge.data.layout import CrossViewData, ImageItem, read_image
from geolink_edge.data.synthetic.weather import WEATHER, apply_weather
from geolink_edge.errors import GeolinkError
from geolink_edge.metrics import evaluate_embeddings
from geolink_edge.preprocess import preprocess_one
from geolink_edge.registry import check_name
from geolink_edge.train.precision import pick_device

D2S = "drone->satellite"
S2D = "satellite->drone"

ImageHook = Callable[[np.ndarray, int], np.ndarray]


def _progress(quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    return Progress(*columns, disable=quiet, transient=True)


@torch.inference_mode()
def embed_paths(
    encoder: torch.nn.Module,
    card: ModelCard,
    paths: Sequence[Path],
    *,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    hook: ImageHook | None = None,
    label: str = "embedding",
    quiet: bool = False,
) -> np.ndarray:
    """L2-normalised descriptors (N, D) float32 of image files, in batches, with a progress bar.

    ``hook(image_bgr, index)`` alters each image after reading (weather); images are read and
    preprocessed by two threads while the encoder runs.
    """
    device = torch.device(device)

    def load(i: int) -> np.ndarray:
        image = read_image(paths[i])
        return preprocess_one(hook(image, i) if hook else image, card)

    was_training = encoder.training
    encoder.eval()
    out = np.empty((len(paths), card.descriptor_dim), dtype=np.float32)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool, _progress(quiet) as bar:
            task = bar.add_task(label, total=len(paths))
            for start in range(0, len(paths), batch_size):
                idx = range(start, min(start + batch_size, len(paths)))
                batch = torch.from_numpy(np.stack(list(pool.map(load, idx)))).to(device)
                desc = encoder(batch).float()
                out[start : start + len(idx)] = torch.nn.functional.normalize(desc, dim=1).cpu().numpy()
                bar.advance(task, len(idx))
    finally:
        encoder.train(was_training)
    return out


def weather_hook(name: str, seed: int = 0) -> ImageHook:
    """Apply one named weather (deterministic per image index) to queries."""
    return lambda image, i: apply_weather(image, name, seed + i)


def parse_weather(text: str | None) -> list[str]:
    names = [w.strip() for w in (text or "").split(",") if w.strip()]
    for name in names:
        check_name("weather", name, WEATHER)
    return names


def _labels(items: Sequence[ImageItem]) -> np.ndarray:
    return np.asarray([item.location for item in items])


def _latlon(items: Sequence[ImageItem], gps: dict[str, tuple[float, float]] | None) -> np.ndarray | None:
    """Each image's own position where the dataset gives one, else its location's."""
    gps = gps or {}
    if any(item.latlon is None and item.location not in gps for item in items):
        return None
    return np.asarray([item.latlon or gps[item.location] for item in items], dtype=np.float64)


def _score(q_items, q_desc, g_items, g_desc, data: CrossViewData, mask: bool) -> dict:
    return evaluate_embeddings(
        q_desc,
        _labels(q_items),
        g_desc,
        _labels(g_items),
        mask_distractors=mask,
        query_latlon=_latlon(q_items, data.gps),
        gallery_latlon=_latlon(g_items, data.gps),
    )


def _select(items: Sequence[ImageItem], desc: np.ndarray, keep: Callable[[ImageItem], bool]):
    idx = [i for i, item in enumerate(items) if keep(item)]
    return [items[i] for i in idx], desc[idx]


def _mean_of(results: list[dict]) -> dict:
    keys = [k for k, v in results[0].items() if isinstance(v, float)]
    return {k: float(np.mean([r[k] for r in results])) for k in keys}


def evaluate_encoder(
    encoder: torch.nn.Module,
    card: ModelCard,
    data: CrossViewData,
    *,
    mask_distractors: bool = False,
    weather: Sequence[str] = (),
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    directions: Sequence[str] = (D2S, S2D),
    quiet: bool = False,
) -> dict:
    """Scores of both directions (and per flight height, and per weather on drone queries)."""
    if not data.query_drone or not data.gallery_satellite:
        raise GeolinkError(f"{data.root}: the test split has no drone queries or no satellite gallery")

    def embed(items, label, hook=None):
        return embed_paths(
            encoder,
            card,
            [it.path for it in items],
            batch_size=batch_size,
            device=device,
            hook=hook,
            label=label,
            quiet=quiet,
        )

    result: dict = {}
    q_drone = embed(data.query_drone, "query drone")
    g_sat = embed(data.gallery_satellite, "gallery satellite")
    if D2S in directions:
        result[D2S] = _score(data.query_drone, q_drone, data.gallery_satellite, g_sat, data, mask_distractors)
    with_s2d = S2D in directions and data.query_satellite and data.gallery_drone
    if with_s2d:
        q_sat = embed(data.query_satellite, "query satellite")
        g_drone = embed(data.gallery_drone, "gallery drone")
        result[S2D] = _score(data.query_satellite, q_sat, data.gallery_drone, g_drone, data, mask_distractors)

    heights = sorted({it.height for it in data.query_drone if it.height is not None})
    if heights and D2S in directions:
        per_height: dict = {}
        for h in heights:
            entry = {
                D2S: _score(
                    *_select(data.query_drone, q_drone, lambda it, h=h: it.height == h),
                    data.gallery_satellite,
                    g_sat,
                    data,
                    mask_distractors,
                )
            }
            if with_s2d:
                g_items, g_desc = _select(data.gallery_drone, g_drone, lambda it, h=h: it.height == h)
                if g_items:
                    entry[S2D] = _score(data.query_satellite, q_sat, g_items, g_desc, data, mask_distractors)
            per_height[str(h)] = entry
        per_height["mean"] = {
            d: _mean_of([e[d] for e in per_height.values() if d in e])
            for d in (D2S, S2D)
            if all(d in e for e in per_height.values())
        }
        result["per_height"] = per_height

    if weather:
        result["weather"] = {}
        for name in weather:
            q_weather = embed(data.query_drone, f"query drone ({name})", weather_hook(name))
            result["weather"][name] = _score(
                data.query_drone, q_weather, data.gallery_satellite, g_sat, data, mask_distractors
            )
    return result


def main(
    checkpoint: str | Path,
    data_root: str | Path,
    *,
    mask_distractors: bool = False,
    weather: Sequence[str] = (),
    heights: list[int] | None = None,
    batch_size: int = 32,
    device: str = "auto",
    json_out: str | Path | None = None,
    quiet: bool = False,
) -> dict:
    """Evaluate a checkpoint on a dataset root; writes the report to ``json_out`` when given."""
    from geolink_edge.data.datasets import open_dataset
    from geolink_edge.models.checkpoint import load_encoder

    if batch_size < 1:
        raise GeolinkError(f"--batch-size must be ≥ 1, got {batch_size}")
    dev = pick_device(device)  # before any loading: a bad --device is a one-line error, not a traceback
    encoder, card = load_encoder(checkpoint)
    data = open_dataset(data_root, heights=heights)
    scores = evaluate_encoder(
        encoder.to(dev),
        card,
        data,
        mask_distractors=mask_distractors,
        weather=weather,
        batch_size=batch_size,
        device=dev,
        quiet=quiet,
    )
    report = {
        "checkpoint": str(checkpoint),
        "dataset": str(data_root),
        "model_hash": card.weights_hash,
        "protocol": scores[D2S]["protocol"],
        "weather_applied_to": "drone queries" if weather else None,
        **scores,
    }
    if json_out is not None:
        write_json(json_out, report)
    return report
