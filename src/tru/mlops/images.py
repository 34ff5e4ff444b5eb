"""The project's container images: one name and tag for the pipeline components, ``docker/Makefile.inc``
(``make image``) and the docs. The tag is the package version plus the flavour."""

from __future__ import annotations

REGISTRY = "ghcr.io/tru-ml/tru"
VERSION = "0.1.0"
IMAGE_GPU = (
    f"{REGISTRY}:{VERSION}-gpu"  # docker/Dockerfile.gpu: CUDA 13.0 runtime + torch 2.13.0 (cu13 wheel)
)
IMAGE_CPU = f"{REGISTRY}:{VERSION}-cpu"  # docker/Dockerfile.cpu: python:3.11-slim + torch 2.13.0 CPU wheel
