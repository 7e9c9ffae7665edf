"""The ``--features`` / ``--matcher`` options shared by ``locate``, ``run`` and ``bench``."""

from __future__ import annotations

from geolink_edge.commands.conf_options import conf_option
from geolink_edge.registry import choices

VERIFY_CONF = "geolink_edge.runtime.verify:VerifyConf"
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


def features_option():
    return conf_option(VERIFY_CONF, "features", "--features", help=FEATURES_HELP)


def rotations_option():
    return conf_option(VERIFY_CONF, "rotations", "--rotations", help=ROTATIONS_HELP)
