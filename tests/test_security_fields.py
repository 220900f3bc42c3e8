"""Posture views flattened to field paths whose diffs read field by field."""

from __future__ import annotations

from daemon.security.fields import diff, fingerprint, flatten


def test_dicts_flatten_by_key_and_named_lists_by_name() -> None:
    view = {"pod": {"hostNetwork": False},
            "containers": [{"name": "app", "privileged": True,
                            "capAdd": ["SYS_ADMIN", "NET_ADMIN"]},
                           {"name": "side", "privileged": False, "capAdd": []}]}
    assert flatten(view) == {
        "pod.hostNetwork": False,
        "containers[app].name": "app",
        "containers[app].privileged": True,
        "containers[app].capAdd": ["NET_ADMIN", "SYS_ADMIN"],
        "containers[side].name": "side",
        "containers[side].privileged": False,
        "containers[side].capAdd": [],
    }


def test_capabilities_reordered_are_no_drift_but_a_command_reordered_is() -> None:
    one = flatten({"capAdd": ["A", "B"], "command": ["sh", "-c"]})
    other = flatten({"capAdd": ["B", "A"], "command": ["-c", "sh"]})
    assert [change["field"] for change in diff(one, other)] == ["command"]


def test_names_repeated_across_container_types_are_told_apart_by_type() -> None:
    fields = flatten({"containers": [{"name": "x", "type": "init", "privileged": True},
                                     {"name": "x", "type": "container", "privileged": False}]})
    assert fields["containers[init:x].privileged"] is True
    assert fields["containers[container:x].privileged"] is False


def test_label_keys_with_dots_stay_one_segment() -> None:
    fields = flatten({"labels": {"pod-security.kubernetes.io/enforce": "restricted"}})
    assert fields == {'labels["pod-security.kubernetes.io/enforce"]': "restricted"}


def test_diff_is_sorted_and_a_field_absent_on_one_side_is_null_there() -> None:
    before = flatten({"containers": [{"name": "app", "memory": 0}]})
    after = flatten({"containers": [{"name": "app", "memory": 64}, {"name": "new", "user": "0"}]})
    assert diff(before, after) == [
        {"field": "containers[app].memory", "before": 0, "after": 64},
        {"field": "containers[new].name", "before": None, "after": "new"},
        {"field": "containers[new].user", "before": None, "after": "0"},
    ]
    assert diff(after, after) == []


def test_mounts_without_names_are_keyed_by_destination_and_others_by_position() -> None:
    sock = "/var/run/docker.sock"
    fields = flatten({"mounts": [{"destination": sock, "source": sock}],
                      "ports": [{"hostIp": "0.0.0.0", "port": 80}]})
    assert fields["mounts[/var/run/docker.sock].source"] == "/var/run/docker.sock"
    assert fields["ports[0].hostIp"] == "0.0.0.0"
    images = flatten({"images": [{"container": "web", "tag": "1.4"}]})
    assert images == {"images[web].container": "web", "images[web].tag": "1.4"}


def test_fingerprint_depends_on_content_not_key_order() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert len(fingerprint({})) == 64
