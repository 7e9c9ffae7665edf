"""The run settings a command flies with: defaults, then ``--config FILE``, then the options given;
checked before any model or index is opened."""

from __future__ import annotations

import math

from geolink_edge.commands.conf_options import given
from geolink_edge.commands.matching_options import FEATURES, MATCHERS
from geolink_edge.errors import GeolinkError
from geolink_edge.registry import check_name, choices


def run_conf(config, verify: tuple[str | None, str | None, int | None] = (None, None, None), **options):
    """The run config: its defaults, then the YAML file ``config`` (if any), then the options given
    (``None``: not given), ``verify`` being --features, --matcher and --rotations. The local-feature
    names are checked before any model loads."""
    from geolink_edge.runtime import conf_yaml
    from geolink_edge.runtime.loop import RunConf

    features, matcher, rotations = verify
    overrides = given(**options)
    chosen = given(features=features, matcher=matcher, rotations=rotations)
    if chosen:
        overrides["locate"] = {"verify": chosen}
    conf = conf_yaml.load(RunConf, config, overrides)
    check_verify(conf.locate.verify)
    check_run(conf)
    return conf


def positive(name: str, value: float | None) -> None:
    """Refuse a negative, zero or non-finite number in one line (``None``: not set)."""
    if value is not None and (not math.isfinite(value) or value <= 0):
        raise GeolinkError(f"{name} must be a positive number, got {value}")


# settings a flight cannot use unless positive: the key, and the option that sets it
POSITIVE = {"altitude": "--altitude", "fps": "--fps", "camera_lost_s": "--camera-lost", "width": "--width"}
POSITIVE |= {"height": "--height", "max_frames": "--max-frames"}


def check_run(conf) -> None:
    """Refuse settings no flight can use, naming the key and its option."""
    for key, option in POSITIVE.items():
        positive(f"{key} ({option})", getattr(conf, key))


def check_verify(conf) -> None:
    """Refuse an unknown extractor or matcher, or a number of turns there is not, in one line."""
    from geolink_edge.runtime.registry import is_model_file

    if not is_model_file(conf.features):
        check_name("local features", conf.features, choices(FEATURES))
    if conf.matcher is not None and not is_model_file(conf.matcher):
        check_name("matcher", conf.matcher, choices(MATCHERS))
    if conf.rotations not in (1, 2, 4, "auto"):
        raise GeolinkError(f"rotations must be 1, 2, 4 or auto, got {conf.rotations}")
