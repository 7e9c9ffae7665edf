"""Torch datasets over a :class:`~geolink_edge.data.layout.CrossViewData`.

``TrainPairs`` yields, per drone image of a training location, the image, the location's satellite
tile and a random draw of its point cloud; with ``second_views`` (the second-view form of the
intra-view loss) also another drone image of the location, a second augmentation of the tile and a
second draw of the cloud. In training, half of the items are mirrored: every image of the item
flipped left-right and the cloud's x negated together, so that a pair never becomes a drone view
and the mirror image of its tile or scene.
Randomness comes from (seed, epoch, index), so a run is reproducible whatever the number of loader
workers; call ``set_epoch`` with the sampler's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from geolink_edge.card import IMAGENET_MEAN, IMAGENET_STD, ModelCard
from geolink_edge.data import pointclouds
from geolink_edge.data.layout import CrossViewData, ImageItem, read_image
from geolink_edge.data.transforms import eval_transform, train_transform
from geolink_edge.errors import GeolinkError
from geolink_edge.preprocess import preprocess_one

POINT_JITTER = 0.01  # std of the Gaussian noise added to training points (unit-ball units)
MIRROR_X = torch.tensor([-1.0, 1.0, 1.0])


def _find_pointclouds(data: CrossViewData, locations: list[str], required: bool) -> dict[str, Path | None]:
    folder = data.pointcloud_dir
    found = {loc: folder / f"{loc}.npz" if folder is not None else None for loc in locations}
    found = {loc: p if p is not None and p.is_file() else None for loc, p in found.items()}
    missing = [loc for loc, p in found.items() if p is None]
    if required and missing:
        where = folder if folder is not None else data.root / "pointclouds"
        raise GeolinkError(
            f"{len(missing)} of {len(locations)} training locations have no point cloud in {where} "
            f"(first: {', '.join(missing[:5])}); run 'geolink-edge reconstruct' or skip them"
        )
    return found


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


class TrainPairs(Dataset):
    def __init__(
        self,
        data: CrossViewData,
        image_size: tuple[int, int],
        n_points: int = 1024,
        train: bool = True,
        require_pointclouds: bool = True,
        seed: int = 0,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        second_views: bool = True,
    ) -> None:
        if n_points < 1:
            raise GeolinkError(f"the number of points must be positive, got {n_points}")
        if not data.train_drone:
            raise GeolinkError(f"{data.root} has no training locations")
        self.data, self.n_points, self.train, self.seed = data, n_points, train, seed
        self.second_views = second_views
        self.locations = sorted(data.train_drone)
        self.items = [(i, p) for i, loc in enumerate(self.locations) for p in data.train_drone[loc]]
        self.labels = [i for i, _ in self.items]
        self.pointcloud_paths = _find_pointclouds(data, self.locations, require_pointclouds)
        if train:
            self.drone_tf = train_transform(image_size, "drone", mean, std)
            self.satellite_tf = train_transform(image_size, "satellite", mean, std)
        else:
            self.drone_tf = self.satellite_tf = eval_transform(image_size, mean, std)
        self.epoch = 0
        self._clouds: dict[str, np.ndarray] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def _image(self, path: Path, transform, rng: np.random.Generator, mirror: bool) -> torch.Tensor:
        transform.set_random_seed(int(rng.integers(2**31)))
        rgb = cv2.cvtColor(read_image(path), cv2.COLOR_BGR2RGB)
        if mirror:
            rgb = cv2.flip(rgb, 1)
        return _to_tensor(transform(image=rgb)["image"])

    def _points(self, location: str, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, bool]:
        path = self.pointcloud_paths[location]
        if path is None:
            empty = torch.zeros(self.n_points, 3)
            return empty, empty.clone(), False
        if location not in self._clouds:
            self._clouds[location] = pointclouds.load(path)
        xyz = self._clouds[location]
        draws = []
        for _ in range(2):
            pick = rng.choice(len(xyz), self.n_points, replace=len(xyz) < self.n_points)
            noise = rng.normal(0.0, POINT_JITTER, (self.n_points, 3)) if self.train else 0.0
            draws.append(torch.from_numpy((xyz[pick] + noise).astype(np.float32)))
        return draws[0], draws[1], True

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        label, path = self.items[index]
        location = self.locations[label]
        others = [p for p in self.data.train_drone[location] if p != path] or [path]
        satellites = self.data.train_satellite[location]
        satellite = satellites[int(rng.integers(len(satellites)))]
        points, points2, has_points = self._points(location, rng)
        mirror = self.train and bool(rng.random() < 0.5)
        if mirror:  # the scene mirrored with its images: x (east in a north-up tile's frame) negated
            points, points2 = points * MIRROR_X, points2 * MIRROR_X
        item = {
            "drone": self._image(path, self.drone_tf, rng, mirror),
            "satellite": self._image(satellite, self.satellite_tf, rng, mirror),
            "points": points,
            "has_points": has_points,
            "label": label,
        }
        if self.second_views:
            item["drone2"] = self._image(others[int(rng.integers(len(others)))], self.drone_tf, rng, mirror)
            item["satellite2"] = self._image(satellite, self.satellite_tf, rng, mirror)
            item["points2"] = points2
        return item


class ImageList(Dataset):
    """Evaluation images through the runtime's own preprocessing: ``{"image", "index"}`` items."""

    def __init__(self, items: Sequence[ImageItem], card: ModelCard) -> None:
        self.items, self.card = list(items), card

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        image = preprocess_one(read_image(self.items[index].path), self.card)
        return {"image": torch.from_numpy(image), "index": index}
