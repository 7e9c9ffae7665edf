"""Albumentations presets: training augmentations per view, and the evaluation transform.

Inputs are RGB uint8 (H, W, 3); outputs float32 (H, W, 3) normalised with the model's mean/std
(the dataset transposes to (3, H, W)). The evaluation preset equals
``geolink_edge.preprocess.preprocess_one`` (INTER_AREA resize, /255, mean/std) so that training-time
validation sees exactly what the runtime feeds the encoder.
"""

from __future__ import annotations

import albumentations as A
import cv2

from geolink_edge.card import IMAGENET_MEAN, IMAGENET_STD
from geolink_edge.registry import check_name

VIEWS = ("drone", "satellite")


def _resize(image_size: tuple[int, int]) -> A.Resize:
    height, width = image_size
    return A.Resize(height, width, interpolation=cv2.INTER_AREA)


def train_transform(
    image_size: tuple[int, int],
    view: str,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> A.Compose:
    """Photometric changes (another day, another sensor) and occlusions after the resize.

    The satellite view also gets quarter turns (before the resize, so a non-square output keeps its
    shape): a nadir tile has no canonical heading for a drone that flies any yaw. Flips are not here:
    a mirrored tile is another place, so the dataset flips a drone image and its tile together
    (as Sample4Geo and CV-Cities do).
    """
    check_name("view", view, VIEWS, ValueError)
    geometric = [A.RandomRotate90(p=1.0)] if view == "satellite" else []
    return A.Compose(
        [
            *geometric,
            _resize(image_size),
            A.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.03, p=0.6),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 7))], p=0.3),
            A.CoarseDropout(
                num_holes_range=(1, 6), hole_height_range=(0.05, 0.15), hole_width_range=(0.05, 0.15), p=0.4
            ),
            A.Normalize(mean=mean, std=std, max_pixel_value=255.0),
        ]
    )


def eval_transform(
    image_size: tuple[int, int],
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
) -> A.Compose:
    return A.Compose([_resize(image_size), A.Normalize(mean=mean, std=std, max_pixel_value=255.0)])
