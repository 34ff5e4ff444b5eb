"""Settings shared by the components: the images they run in.

The defaults are the project's images (:mod:`tru.mlops.images`, the same name and tag that ``make image``
builds); ``TRU_IMAGE_GPU`` / ``TRU_IMAGE_CPU`` override them when the components are imported (compile
time). A pipeline run can still replace them through its ``image`` / ``cpu_image`` parameters."""

import os

from tru.mlops import images

IMAGE_GPU: str = os.environ.get("TRU_IMAGE_GPU") or images.IMAGE_GPU
IMAGE_CPU: str = os.environ.get("TRU_IMAGE_CPU") or images.IMAGE_CPU
