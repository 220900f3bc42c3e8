"""Security posture: checks over what Docker and Kubernetes run, drift from a baseline,
and `remedyd scan`. Pure code here; the sources that feed it live in daemon/sources."""
