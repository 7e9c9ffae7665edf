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
    return conf


def check_verify(conf) -> None:
    """Refuse an unknown extractor or matcher, or a number of turns there is not, in one line."""
    from geolink_edge.errors import GeolinkError
    from geolink_edge.registry import check_name
    from geolink_edge.runtime.registry import is_model_file

    if not is_model_file(conf.features):
        check_name("local features", conf.features, choices(FEATURES))
    if conf.matcher is not None and not is_model_file(conf.matcher):
        check_name("matcher", conf.matcher, choices(MATCHERS))
    if conf.rotations not in (1, 2, 4, "auto"):
        raise GeolinkError(f"rotations must be 1, 2, 4 or auto, got {conf.rotations}")
