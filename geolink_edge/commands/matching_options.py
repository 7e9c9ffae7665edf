"""The ``--features`` / ``--matcher`` options shared by ``locate``, ``run`` and ``bench``."""

from __future__ import annotations

from geolink_edge.commands.conf_options import conf_option
from geolink_edge.registry import choices

VERIFY_CONF = "geolink_edge.runtime.verify:VerifyConf"
LOCATE_CONF = "geolink_edge.runtime.locate:LocateConf"
FEATURES = "geolink_edge.runtime.features"
MATCHERS = "geolink_edge.runtime.matchers"

FEATURES_HELP = (
    f"local features for verification: {', '.join(choices(FEATURES))}, "
    "or an exported extractor (.onnx, .engine)"
)
MATCHER_HELP = (
    f"matcher: {', '.join(choices(MATCHERS))}, or an exported matcher (.onnx, .engine); "
    "default: the features' own"
)

ROTATIONS_HELP = (
    "1, 2 or 4: a frame of unknown heading is also matched turned by 180° or each 90°; "
    "auto: 4 for learned features, 1 for sift, orb and akaze (rotation-invariant)"
)

VERIFIER_HELP = (
    "how candidate map windows are checked: features (local features), correlation (area correlation "
    "of the frame over the map; needs intrinsics, heading, pitch and height), auto (correlation when "
    "those are known and the frame has texture, the features checking its best place when its peak "
    "is not distinct; else features)"
)


def features_option():
    return conf_option(VERIFY_CONF, "features", "--features", help=FEATURES_HELP)


def rotations_option():
    return conf_option(VERIFY_CONF, "rotations", "--rotations", help=ROTATIONS_HELP)


def verifier_option():
    return conf_option(LOCATE_CONF, "verifier", "--verifier", help=VERIFIER_HELP)


def with_verifier(conf, name: str | None):
    """A run config with ``--verifier`` ``name`` applied (``None``: as it is); an unknown name is
    refused in one line."""
    from dataclasses import replace

    from geolink_edge.registry import check_name
    from geolink_edge.runtime.candidates import VerifierMode

    if name is None:
        return conf
    check_name("--verifier", name, [mode.value for mode in VerifierMode])
    return replace(conf, locate=replace(conf.locate, verifier=VerifierMode(name)))
