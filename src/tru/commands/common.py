"""Helpers shared by the sub-commands: config layering from flags, and safe atomic output folders
(:func:`atomic_dir`), which follow the output rules of :mod:`tru.outputs`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tru.outputs import (  # noqa: F401  (re-exported: the commands' names for the output rules)
    INPUT_DIR_FLAGS,
    INPUT_FILE_FLAGS,
    MARKER,
    Invocation,
    OutputError,
    atomic_dir,
    check_output_dir,
    check_output_location,
    current_invocation,
    invoked,
    marker_bytes,
    tru_wrote,
)


class CLIError(Exception):
    """A user-facing error: printed as ``error: <message>``, exit code 2."""


def invocation_from_args(args: argparse.Namespace) -> Invocation:
    """The command label and the input paths of parsed CLI ``args``."""
    words = [str(getattr(args, "command", "") or "")]
    for dest in ("data_command", "requests_command", "pipeline_command", "registry_command"):
        if getattr(args, dest, None):
            words.append(str(getattr(args, dest)))
            break
    inputs: list[tuple[str, Path, bool]] = []
    for flags, is_dir in ((INPUT_DIR_FLAGS, True), (INPUT_FILE_FLAGS, False)):
        for flag in flags:
            value = getattr(args, flag, None)
            values = value if isinstance(value, list | tuple) else [value]
            inputs += [
                (f"--{flag}", Path(v), is_dir or Path(v).is_dir())
                for v in values
                if isinstance(v, str | Path) and v
            ]
    return Invocation(" ".join(["tru", *[w for w in words if w]]), tuple(inputs))


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
