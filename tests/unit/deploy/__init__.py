"""Offline checks of the deployment: compose file, Dockerfile, Kubernetes manifests and the production config."""
