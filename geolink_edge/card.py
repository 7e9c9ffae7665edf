"""The model card: what every artifact records about the 2D encoder it was made with.

The card says how to build the encoder (backbone, aggregator), how to feed it (image size, colour
order, mean/std) and which weights it holds (a content hash). Stages compare the hash to refuse
mismatched pairs, e.g. an index built with another encoder.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from geolink_edge.errors import GeolinkError

CARD_FORMAT = "geolink-edge/model-card/1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MixVPRConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Literal["mixvpr"] = "mixvpr"
    out_channels: int = Field(1024, gt=0)
    out_rows: int = Field(4, gt=0)
    mix_depth: int = Field(2, ge=0)
    mlp_ratio: float = Field(1.0, gt=0)


class ModelCard(BaseModel):
    """Describes one 2D encoder. ``weights_hash`` is None until weights are attached."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["geolink-edge/model-card/1"] = CARD_FORMAT
    backbone: str
    image_size: tuple[int, int] = Field(description="(height, width) fed to the encoder")
    feature_dim: int = Field(gt=0, description="channels of the backbone's spatial map")
    feature_size: tuple[int, int] = Field(description="(h, w) of the backbone's spatial map")
    aggregator: MixVPRConfig = MixVPRConfig()
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    color_order: Literal["RGB"] = "RGB"
    interpolation: Literal["area"] = "area"
    tile_m: float | None = Field(
        None, gt=0, description="ground footprint (m) of the training satellite tiles"
    )
    weights_hash: str | None = None

    @property
    def descriptor_dim(self) -> int:
        return self.aggregator.out_channels * self.aggregator.out_rows

    @property
    def short_hash(self) -> str:
        return (self.weights_hash or "unhashed")[:12]

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["descriptor_dim"] = self.descriptor_dim
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model card") -> ModelCard:
        data = {k: v for k, v in data.items() if k != "descriptor_dim"}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise GeolinkError(f"{source}: invalid model card ({where}: {first['msg']})") from None

    @classmethod
    def from_json(cls, text: str, source: str = "model card") -> ModelCard:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GeolinkError(f"{source}: model card is not JSON ({exc.msg})") from None
        if not isinstance(data, dict):
            raise GeolinkError(f"{source}: model card is not a JSON object")
        return cls.from_dict(data, source)


def hash_state_dict(state_dict: dict[str, Any]) -> str:
    """A stable sha256 of tensor names, dtypes, shapes and values (torch tensors or numpy arrays).

    Independent of dict order and device; reloading the same weights gives the same hash, and
    changing any single value changes it.
    """
    import numpy as np

    digest = hashlib.sha256()
    for name in sorted(state_dict):
        value = state_dict[name]
        if hasattr(value, "detach"):  # torch tensor; bf16 has no numpy dtype
            tensor = value.detach().cpu().contiguous()
            if str(tensor.dtype) == "torch.bfloat16":
                tensor = tensor.float()
            array = tensor.numpy()
        else:
            array = np.ascontiguousarray(value)
        digest.update(name.encode())
        digest.update(str(array.dtype).encode())
        digest.update(str(tuple(array.shape)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def check_same_model(expected: str | None, found: str | None, expected_what: str, found_what: str) -> None:
    """Refuse a pair of artifacts made with different encoder weights."""
    if expected != found:
        raise GeolinkError(
            f"model mismatch: {expected_what} has model hash {str(expected)[:12]} "
            f"but {found_what} has {str(found)[:12]}"
        )
