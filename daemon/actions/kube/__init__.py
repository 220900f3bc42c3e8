"""Kubernetes actions: each acts through the API server on a target resolved from the
event's subject by the cache's owner chain, with the verbs it declares in ACTIONS."""
