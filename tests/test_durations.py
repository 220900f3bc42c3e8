"""Durations as operators write them, and the values no timer can take."""

from __future__ import annotations

import pytest

from daemon.core.durations import parse_duration


@pytest.mark.parametrize(("text", "seconds"), [
    ("500ms", 0.5), ("10s", 10.0), ("2m", 120.0), ("1h30m", 5400.0), ("1d", 86400.0),
    (0, 0.0), (2.5, 2.5), ("0", 0.0),
])
def test_prometheus_style_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, "-5s", "5 s", "5x", "", True,
                                 None, [1]])
def test_bad_durations_are_refused_with_the_value_named(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_a_nan_in_the_config_file_names_the_key(tmp_path: object) -> None:
    from pathlib import Path

    from daemon.core.errors import ConfigError
    from daemon.settings import load_settings

    path = Path(str(tmp_path)) / "remedyd.toml"
    path.write_text("[safety]\ncoalesce_window = nan\n")
    with pytest.raises(ConfigError, match=r"safety\.coalesce_window.*finite"):
        load_settings(path)
