"""The images the components name at compile time: the project's images tagged with the code version
(:func:`tru.mlops.images.image`); ``TRU_IMAGE_GPU`` / ``TRU_IMAGE_CPU`` override them. A pipeline run can
still replace them through its ``image`` / ``cpu_image`` parameters."""

import os

from tru.mlops import images

IMAGE_GPU: str = os.environ.get("TRU_IMAGE_GPU") or images.image("gpu")
IMAGE_CPU: str = os.environ.get("TRU_IMAGE_CPU") or images.image("cpu")
