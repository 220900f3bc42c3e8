"""An empty or missing selector acts on nothing, never on "all": a rollback of a Deployment
whose selector is empty is refused (audited, nothing written), and the selector query
refuses every form that would select everything."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.actions.kube.revisions import BadSelector, selector
from tests.kubeactions import Cluster, deployment
from tests.kubeactions import cluster as cluster  # the fixture


async def test_a_deployment_with_an_empty_selector_is_not_rolled_back(cluster: Cluster) -> None:
    web = deployment("web", replicas=1)
    web["spec"]["selector"] = {}
    cluster.kube.bed.apply(web)
    cluster.kube.bed.controller.crash_loop("default", cluster.pods()[0], restart_count=5)
    event = await cluster.event("crashloop", cluster.pods()[0])
    record, outcome = await cluster.act(event, "[kubernetes.rollback: {}]")

    assert outcome is None
    assert record["target"]["kind"] == "deployment"
    assert (record["decision"], record["suppressed_by"]) == ("suppressed", "selector")
    assert record["reason"] == ("kubernetes.rollback: deployment default/web has an empty "
                                "selector: it would select everything; refusing to act on it")
    assert cluster.writes() == []


@pytest.mark.parametrize("spec", [{}, {"selector": None}, {"selector": {}},
                                  {"selector": {"matchLabels": {}, "matchExpressions": []}},
                                  {"selector": {"matchExpressions": [
                                      {"key": "app", "operator": "Like", "values": ["w"]}]}}],
                         ids=["missing", "null", "empty", "empty-parts", "unknown-operator"])
def test_a_selector_that_would_select_everything_is_refused(spec: dict[str, Any]) -> None:
    with pytest.raises(BadSelector, match="deployment default/web"):
        selector({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})


def test_a_real_selector_is_kubectls_query() -> None:
    spec = {"selector": {"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [
        {"key": "tier", "operator": "NotIn", "values": ["x", "db"]}]}}
    assert selector({"spec": spec}) == "a=1,b=2,tier notin (db,x)"
