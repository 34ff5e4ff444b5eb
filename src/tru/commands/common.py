"""Helpers shared by the sub-commands: config layering from flags, atomic output folders."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class CLIError(Exception):
    """A user-facing error: printed as ``error: <message>``, exit code 2."""


def add_config_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", action="append", metavar="YAML", help="extra config file (layered last)")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="config override, e.g. learning_rate=5e-4"
    )
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, help="torch CPU threads")


def overrides_from(
    args: argparse.Namespace, keys: tuple[str, ...] = ("epochs", "seed", "device", "threads")
) -> dict[str, Any]:
    from tru.config import parse_override

    out: dict[str, Any] = dict(parse_override(s) for s in (getattr(args, "set", None) or []))
    for key in keys:
        val = getattr(args, key, None)
        if val is not None:
            out[key] = val
    return out


def config_files(args: argparse.Namespace) -> list[Path]:
    return [Path(f) for f in (getattr(args, "config", None) or [])]


@contextmanager
def atomic_dir(out: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``out``, on failure it is removed, so
    ``out`` is never half-written and an existing ``out`` survives a failed run."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CLIError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def print_metrics(metrics: dict[str, dict[str, float]], where: Path | None = None) -> None:
    names = ("recall", "ndcg", "precision", "map", "hr")
    first = next(iter(metrics.values()))
    ks = sorted({int(k.split("@")[1]) for k in first})
    print(f"{'split':<6} {'K':>3} " + " ".join(f"{m:>9}" for m in names))
    for split, vals in metrics.items():
        for k in ks:
            print(
                f"{split:<6} {k:>3} " + " ".join(f"{vals.get(f'{m}@{k}', float('nan')):9.4f}" for m in names)
            )
    if where is not None:
        print(f"metrics written to {where / 'metrics.json'}")
