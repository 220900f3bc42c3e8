"""Integrations plug into the daemon through one small contract (see base.py)."""
