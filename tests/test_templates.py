from __future__ import annotations

import pytest

from daemon.core.templates import TemplateError, check, render


def test_labels_fill_the_template() -> None:
    assert render("{{ $labels.namespace }}/{{$labels.app}}", {"namespace": "lake",
                                                            "app": "api"}) == "lake/api"


def test_a_missing_or_empty_label_gives_no_target() -> None:
    assert render("{{ $labels.app }}", {}) is None
    assert render("{{ $labels.app }}", {"app": ""}) is None


def test_only_label_lookups_are_allowed() -> None:
    check("plain-name")
    with pytest.raises(TemplateError):
        check("{{ $value }}")
