"""Choices are found from the modules: adding an implementation is adding its file."""

from __future__ import annotations

import sys

import pytest

from geolink_edge.errors import GeolinkError
from geolink_edge.registry import choices, load_module


def test_a_new_module_is_a_choice_and_helpers_are_not(tmp_path, monkeypatch):
    package = tmp_path / "plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text("class Extractor:\n    name: str\n")
    (package / "shared.py").write_text("from plugins.base import Extractor\n")
    (package / "star.py").write_text(
        'from plugins.base import Extractor as Base\n\n\nclass Extractor(Base):\n    name = "star"\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "plugins", raising=False)
    assert choices("plugins") == ("star",)
    assert load_module("extractor", "star", "plugins").Extractor.name == "star"
    with pytest.raises(GeolinkError, match=r"^unknown extractor 'base' \(choose from star\)$"):
        load_module("extractor", "base", "plugins")


def test_the_runtime_offers_its_extractors_and_matchers():
    from geolink_edge.runtime.features import learned_extractors
    from geolink_edge.runtime.matchers import learned_matchers

    extractors, matchers = choices("geolink_edge.runtime.features"), choices("geolink_edge.runtime.matchers")
    assert set(extractors) >= {"sift", "orb", "akaze", "disk", "aliked", "xfeat"}
    assert set(matchers) >= {"nn", "lightglue", "lighterglue"}
    assert not {"base", "learned", "glue"} & set(extractors + matchers)
    assert set(learned_extractors()) == {"disk", "aliked", "xfeat"}
    assert set(learned_matchers()) == {"lightglue", "lighterglue"}
