"""Training checkpoints: plain dicts of tensors and basic types, read without unpickling objects.

Format ``geolink-edge/checkpoint/1`` (see docs/artifacts.md): ``format``, ``model_card`` (dict with
``weights_hash``), ``encoder`` (state dict of the 2D :class:`ImageEncoder`) and whatever else the
trainer keeps (3D branch, vCLUB estimators, optimiser states, epoch, metrics...).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from geolink_edge.atomic import atomic_path
from geolink_edge.card import ModelCard, check_same_model, hash_state_dict
from geolink_edge.errors import GeolinkError
from geolink_edge.models.encoder import ImageEncoder, error_summary

CHECKPOINT_FORMAT = "geolink-edge/checkpoint/1"


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (stamped with the format) so a crash never leaves a partial file."""
    if "model_card" not in payload or "encoder" not in payload:
        raise ValueError("a checkpoint needs 'model_card' and 'encoder'")
    with atomic_path(path) as tmp:
        torch.save({**payload, "format": CHECKPOINT_FORMAT}, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint onto the CPU with ``weights_only=True``; anything else is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise GeolinkError(f"{path}: checkpoint not found")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise GeolinkError(
            f"{path}: not a checkpoint of plain tensors and values (refused to unpickle it)"
        ) from None
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise GeolinkError(
            f"{path}: not a readable checkpoint (truncated, corrupt or not from torch; {type(exc).__name__})"
        ) from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise GeolinkError(
            f"{path}: not a geolink-edge checkpoint (format {found!r}, expected {CHECKPOINT_FORMAT})"
        )
    for key in ("model_card", "encoder"):
        if not isinstance(data.get(key), dict):
            raise GeolinkError(f"{path}: checkpoint has no {key!r} entry")
    return data


def load_encoder(path: str | os.PathLike) -> tuple[ImageEncoder, ModelCard]:
    """The 2D encoder of a checkpoint (eval mode, CPU) and its card, after checking the weights hash."""
    data = read_checkpoint(path)
    card = ModelCard.from_dict(data["model_card"], source=f"{path} model card")
    state = data["encoder"]
    check_same_model(card.weights_hash, hash_state_dict(state), f"{path} model card", "its encoder weights")
    encoder = ImageEncoder(card)
    missing, unexpected = _key_differences(encoder.state_dict(), state)
    if missing or unexpected:
        raise GeolinkError(
            f"{path}: encoder weights do not fit {card.backbone} "
            f"({len(missing)} missing, {len(unexpected)} unexpected, e.g. {(missing or unexpected)[0]})"
        )
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:
        detail = error_summary(exc)
        raise GeolinkError(f"{path}: encoder weights do not fit {card.backbone} ({detail})") from None
    return encoder.eval(), card


def _key_differences(expected: dict, found: dict) -> tuple[list[str], list[str]]:
    return sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
