"""An in-process HTTP server that behaves like kube-apiserver for the kinds remedyd uses."""
