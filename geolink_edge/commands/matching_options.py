"""The ``--features`` / ``--matcher`` options shared by ``locate``, ``run`` and ``bench``."""

from __future__ import annotations

from geolink_edge.commands.conf_options import conf_option, given

VERIFY_CONF = "geolink_edge.runtime.verify:VerifyConf"
LOCATE_CONF = "geolink_edge.runtime.locate:LocateConf"

FEATURES_HELP = (
    "local features for verification: sift, orb, akaze, disk, aliked, xfeat, "
    "or an exported extractor (.onnx, .engine)"
)
MATCHER_HELP = (
    "matcher: nn (nearest neighbour + ratio test), lightglue, lighterglue, or an exported matcher "
    "(.onnx, .engine); default: the features' own"
)

ROTATIONS_HELP = (
    "1, 2 or 4: a frame of unknown heading is also matched turned by 180° or each 90°; "
    "auto: 4 for learned features, 1 for sift, orb and akaze (rotation-invariant)"
)

VERIFIER_HELP = (
    "how candidate map windows are checked: features (local features), correlation (area correlation "
    "of the frame over the map; needs intrinsics, heading, pitch and height), auto (correlation when "
    "those are known and the frame has texture and a distinct peak, else features)"
)


def features_option():
    return conf_option(VERIFY_CONF, "features", "--features", help=FEATURES_HELP)


def rotations_option():
    return conf_option(VERIFY_CONF, "rotations", "--rotations", help=ROTATIONS_HELP)


def verifier_option():
    return conf_option(LOCATE_CONF, "verifier", "--verifier", help=VERIFIER_HELP)


def verifier_mode(name: str | None):
    """The ``--verifier`` mode by name (``None``: the conf's default)."""
    from geolink_edge.registry import check_name
    from geolink_edge.runtime.candidates import VerifierMode

    if name is None:
        return None
    check_name("--verifier", name, [mode.value for mode in VerifierMode])
    return VerifierMode(name)


def verify_conf(features: str | None, matcher: str | None, rotations: int | None = None):
    """The verification conf of these options (``None``: the conf's default); an unknown name is
    refused before any model loads."""
    from geolink_edge.errors import GeolinkError
    from geolink_edge.registry import check_name
    from geolink_edge.runtime.features import EXTRACTORS
    from geolink_edge.runtime.matchers import MATCHERS
    from geolink_edge.runtime.registry import is_model_file
    from geolink_edge.runtime.verify import VerifyConf

    if features is not None and not is_model_file(features):
        check_name("local features", features, EXTRACTORS)
    if matcher is not None and not is_model_file(matcher):
        check_name("matcher", matcher, MATCHERS)
    if rotations not in (None, 1, 2, 4):
        raise GeolinkError(f"--rotations must be 1, 2 or 4, got {rotations}")
    return VerifyConf(matcher=matcher, **given(features=features, rotations=rotations))
