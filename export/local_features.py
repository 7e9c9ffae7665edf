"""ONNX export of a learned extractor and its matcher, for ONNX Runtime and TensorRT with no torch.

``main(conf, pair, out)`` writes ``out/<features>.onnx`` and ``out/<features>-<matcher>.onnx``.
Extractors have one input size (``conf.size`` square; the runtime pads smaller images and tiles
larger ones, see ``runtime.features.learned``) and a fixed number of keypoints K (XFeat's keypoint
head needs static shapes, and a fixed K suits TensorRT); the runtime drops the ones scored too
low. Matchers take dynamic keypoint counts M and N and run every layer on every point (no early
exit or pruning: no data-dependent control flow). What each file is goes in its metadata, so
``--features`` and ``--matcher`` take the files by path.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from geolink_edge.atomic import atomic_dir
from geolink_edge.backends.metadata import LOCAL_FEATURES_KEY, PRECISION_KEY, write_onnx_metadata
from geolink_edge.errors import GeolinkError
from geolink_edge.localnets import (
    EXTRACTOR_IO,
    MATCHER_IO,
    create_net,
    describe_extractor,
    extractor_nets,
    matcher_nets,
)


@dataclass(frozen=True)
class MatchingExportConf:
    size: int = 640  # the extractor's square input, px
    keypoints: int = 1024  # K of the extractor
    features_weights: str | None = None
    matcher_weights: str | None = None
    force: bool = False

    def __post_init__(self) -> None:
        if not 64 <= self.size <= 4096 or self.size % 32:
            raise GeolinkError(f"--size must be a multiple of 32 in [64, 4096], got {self.size}")
        if not 16 <= self.keypoints <= 16384:
            raise GeolinkError(f"--keypoints must be in [16, 16384], got {self.keypoints}")


def parse_pair(text: str) -> tuple[str, str]:
    """``disk+lightglue`` → (disk, lightglue); ``disk`` alone → disk and its natural matcher."""
    from geolink_edge.runtime.features import extractor_class
    from geolink_edge.runtime.matchers import matcher_class

    features, _, matcher = text.partition("+")
    matcher = matcher or extractor_class(features).matcher
    matcher_class(matcher)  # an unknown name: the one-line error that lists them
    if features not in extractor_nets():
        raise GeolinkError(
            f"{features} is not a learned extractor (export one of {', '.join(extractor_nets())})"
        )
    if matcher not in matcher_nets():
        raise GeolinkError(f"{matcher} is not a learned matcher (export one of {', '.join(matcher_nets())})")
    return features, matcher


def _export(
    net, args: tuple, path: Path, io: tuple[list[str], list[str]], dynamic: dict | None, spec: dict
) -> Path:
    dynamo, opset = net.onnx_export
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and exporter chatter about constants, as intended
        torch.onnx.export(
            net,
            args,
            str(path),
            input_names=io[0],
            output_names=io[1],
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=dynamo,
            **({"verbose": False, "external_data": False} if dynamo else {"do_constant_folding": True}),
        )
    write_onnx_metadata(path, {LOCAL_FEATURES_KEY: json.dumps(spec, sort_keys=True), PRECISION_KEY: "fp32"})
    return path


def export_extractor(name: str, path: Path, conf: MatchingExportConf) -> Path:
    net = create_net(name, conf.keypoints, conf.features_weights)
    image = torch.rand(1, 3, conf.size, conf.size, generator=torch.Generator().manual_seed(0))
    spec = describe_extractor(name, net, conf.keypoints, (conf.size, conf.size))
    return _export(net, (image,), path, EXTRACTOR_IO, None, spec)


def export_matcher(
    name: str, features: str, descriptor_dim: int, path: Path, conf: MatchingExportConf
) -> Path:
    net = create_net(name, features, conf.matcher_weights)
    generator = torch.Generator().manual_seed(0)
    count = min(conf.keypoints, 256)  # any count: M and N are dynamic
    keypoints = [torch.rand(1, count, 2, generator=generator) * conf.size for _ in range(2)]
    descriptors = [
        torch.nn.functional.normalize(torch.randn(1, count, descriptor_dim, generator=generator), dim=-1)
        for _ in range(2)
    ]
    # two distinct tensors: the exporter would make one input of a tensor passed twice
    sizes = [
        torch.tensor([[float(conf.size), float(conf.size)]]),
        torch.tensor([[conf.size * 0.75, conf.size * 0.5]]),
    ]
    names = MATCHER_IO[0] + MATCHER_IO[1]
    dynamic = {n: {1: "n" if n.endswith("1") else "m"} for n in names if not n.startswith("size")}
    spec = {"kind": "matcher", "name": name, "features": features, "descriptor_dim": descriptor_dim}
    return _export(net, (*keypoints, *descriptors, *sizes), path, MATCHER_IO, dynamic, spec)


def main(conf: MatchingExportConf, pair: str, out: str | Path) -> Path:
    """Write the extractor and matcher ONNX files of ``pair`` into the folder ``out``."""
    features, matcher = parse_pair(pair)
    with atomic_dir(out, conf.force) as tmp:
        export_extractor(features, tmp / f"{features}.onnx", conf)
        dim = create_net(features, 16).descriptor_dim
        export_matcher(matcher, features, dim, tmp / f"{features}-{matcher}.onnx", conf)
    return Path(out)
