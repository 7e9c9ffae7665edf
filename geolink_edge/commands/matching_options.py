"""The ``--features`` / ``--matcher`` options shared by ``locate``, ``run`` and ``bench``."""

from __future__ import annotations

from geolink_edge.commands.conf_options import conf_option, given
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


def verify_conf(features: str | None, matcher: str | None, rotations: int | None = None):
    """The verification conf of these options (``None``: the conf's default); an unknown name is
    refused before any model loads."""
    from geolink_edge.errors import GeolinkError
    from geolink_edge.registry import check_name
    from geolink_edge.runtime.registry import is_model_file
    from geolink_edge.runtime.verify import VerifyConf

    if features is not None and not is_model_file(features):
        check_name("local features", features, choices(FEATURES))
    if matcher is not None and not is_model_file(matcher):
        check_name("matcher", matcher, choices(MATCHERS))
    if rotations not in (None, 1, 2, 4):
        raise GeolinkError(f"--rotations must be 1, 2 or 4, got {rotations}")
    return VerifyConf(matcher=matcher, **given(features=features, rotations=rotations))
