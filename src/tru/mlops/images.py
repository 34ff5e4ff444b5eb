"""The project's container images and the tag that ties them to the code.

A pipeline compiled from some code must run that code, so the image tag is the **code version**:
``<package version>-<first 12 hex digits of a SHA-256 over the package's source files>``, e.g.
``0.1.0-3f2a9c1b4d5e``. The hash covers every ``.py`` and ``.yaml`` file under the installed ``tru``
package (path relative to the package and content, in sorted path order), so it is the same in an
editable checkout, after ``pip install .`` and inside the image (``pip install .`` copies exactly those
files), and it changes with any edit to them. A git commit would not do: the image and a wheel have no
``.git``, and a commit changes with edits (README, tests) that do not change what runs.

Users of the tag:

* ``tru.kfp`` / ``components`` put :func:`image` into the compiled pipeline YAML at compile time;
* ``docker/Makefile.inc`` (``make image``) and ``.github/workflows/images.yml`` tag the images with
  ``python -m tru.mlops.images tag``; each Dockerfile checks at build time that the code it installed
  hashes to the tag it was given (build argument ``TRU_CODE_VERSION``).

This module needs only the standard library and ``tru/__init__.py``, so ``PYTHONPATH=src python -m
tru.mlops.images tag`` works in a bare checkout (CI computes the tag before installing anything).

Environment: ``TRU_IMAGE_REGISTRY`` replaces the repository ``ghcr.io/tru-ml/tru`` (e.g.
``registry.example.com:5000/ml/tru``); it is read on every call, and by the names ``IMAGE_GPU`` /
``IMAGE_CPU`` (kept for earlier importers) each time they are read.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import tru

DEFAULT_REGISTRY = "ghcr.io/tru-ml/tru"
REGISTRY_ENV = "TRU_IMAGE_REGISTRY"
FLAVOURS = ("gpu", "cpu")  # docker/Dockerfile.gpu (torch for CUDA 12.6), docker/Dockerfile.cpu
SOURCE_SUFFIXES = (".py", ".yaml")
HASH_CHARS = 12  # 48 bits: a collision between two code versions of one project is not a practical risk
PACKAGE_DIR = Path(tru.__file__).resolve().parent

# a Docker tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; a repository: [host[:port]/] + lowercase path components
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REPO_RE = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
)


def source_files(root: Path) -> list[Path]:
    """The files the code version covers: every ``.py`` and ``.yaml`` file under ``root`` (compiled files
    and ``__pycache__`` excluded), as paths relative to ``root``, sorted by their POSIX form."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"source_files: {root} is not a directory")
    files = [
        p.relative_to(root)
        for p in root.rglob("*")
        if p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts and p.is_file()
    ]
    return sorted(files, key=lambda p: p.as_posix())


def source_hash(root: Path) -> str:
    """SHA-256 (hex) over :func:`source_files` of ``root``: for each file its relative POSIX path, a NUL,
    its size and its bytes, so that moving content between files or renaming a file changes the hash."""
    root = Path(root)
    digest = hashlib.sha256()
    for rel in source_files(root):
        data = (root / rel).read_bytes()
        digest.update(rel.as_posix().encode())
        digest.update(b"\0")
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()


def tag_for(root: Path, version: str) -> str:
    """The code version of the package tree at ``root`` whose package version is ``version``."""
    tag = f"{version}-{source_hash(root)[:HASH_CHARS]}"
    if not _TAG_RE.fullmatch(tag):
        raise ValueError(f"package version {version!r} does not make a valid image tag ({tag!r})")
    return tag


@functools.cache
def code_version() -> str:
    """The installed ``tru`` package's code version, ``<tru.__version__>-<12 hex>`` (see the module doc);
    computed once per process (about a hundred small files)."""
    return tag_for(PACKAGE_DIR, tru.__version__)


def registry() -> str:
    """The image repository: ``$TRU_IMAGE_REGISTRY`` when set and non-empty, else ``ghcr.io/tru-ml/tru``."""
    repo = os.environ.get(REGISTRY_ENV, "").strip() or DEFAULT_REGISTRY
    if not _REPO_RE.fullmatch(repo):
        raise ValueError(
            f"{REGISTRY_ENV}={repo!r} is not an image repository: expected [host[:port]/]path in lowercase, "
            "without a tag or digest (e.g. ghcr.io/my-org/tru)"
        )
    return repo


def image(flavour: str, version: str | None = None) -> str:
    """The full reference of the ``flavour`` image (``"gpu"`` or ``"cpu"``):
    ``<registry>:<version>-<flavour>``, ``version`` defaulting to :func:`code_version` (the code being
    compiled or run)."""
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown image flavour {flavour!r}: expected one of {', '.join(FLAVOURS)}")
    version = code_version() if version is None else version
    if not _TAG_RE.fullmatch(f"{version}-{flavour}"):
        raise ValueError(f"image version {version!r} is not a valid Docker tag prefix")
    return f"{registry()}:{version}-{flavour}"


_CONSTANTS = {
    "IMAGE_GPU": "gpu",  # docker/Dockerfile.gpu: python:3.11-slim + torch 2.13.0 built for CUDA 12.6
    "IMAGE_CPU": "cpu",  # docker/Dockerfile.cpu: python:3.11-slim + torch 2.13.0 CPU wheel
}


def __getattr__(name: str) -> str:
    """``IMAGE_GPU`` / ``IMAGE_CPU``, the names earlier versions exported: ``image("gpu")`` /
    ``image("cpu")`` computed when read (PEP 562), so importing this module never fails on a bad
    ``$TRU_IMAGE_REGISTRY``, and ``from tru.mlops.images import IMAGE_GPU`` sees the registry set then."""
    if name in _CONSTANTS:
        return image(_CONSTANTS[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tru.mlops.images tag | registry | ref {gpu,cpu} [--version V]``: print one value."""
    parser = argparse.ArgumentParser(
        prog="python -m tru.mlops.images",
        description="Print the code version (image tag) or an image reference of tru.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("tag", help="the code version (the image tag without the flavour)")
    sub.add_parser("registry", help="the image repository ($TRU_IMAGE_REGISTRY or ghcr.io/tru-ml/tru)")
    ref = sub.add_parser("ref", help="the full image reference of one flavour")
    ref.add_argument("flavour", choices=FLAVOURS)
    ref.add_argument("--version", help="the tag prefix (default: the code version)")
    args = parser.parse_args(argv)
    try:
        if args.command == "tag":
            print(code_version())
        elif args.command == "registry":
            print(registry())
        else:
            print(image(args.flavour, args.version))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
