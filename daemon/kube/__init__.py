"""Kubernetes objects as remedyd keeps them: trimmed, cached, turned into transitions.

Pure, like daemon.engine: plain JSON dicts in, Events out; no event loop, no client.
The watch that feeds it lives with the sources.
"""
