"""The ``tru`` command line.

    tru data prepare --source {synthetic,lfm2k,ml100k,mmrec} [--path SRC] --out DIR
    tru data validate DIR
    tru train --data DIR --backbone {mgcn,miggt,vbpr} [--epochs N] [--seed S] --out RUN_DIR
    tru evaluate --data DIR --model RUN_DIR
    tru requests generate --data DIR --regime R [--strategy S] [--ratio F] --out CSV
    tru sensitivity --data DIR --model RUN_DIR --requests CSV --out DIR
    tru unlearn --data DIR --model RUN_DIR --requests CSV --method M --out RUN_DIR2
    tru certify --data DIR --original RUN --unlearned RUN2 [--retrained RUN3] --requests CSV --out DIR
    tru bench --data DIR [DIR ...] --out DIR
    tru requests add --user U | --item I | --pair U I --reason TEXT
    tru trigger --from REV --to REV [--mode local|cluster]
    tru registry list|champion|purge --name NAME
    tru pipeline compile --out FILE | run --local | submit --host URL | schedule --host URL --cron CRON

Exit codes: 0 success; 1 invalid data (validation failed); 2 bad input / usage / other error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tru import __version__
from tru.commands import bench, certify, data, mlops_data, pipeline, registry, train, unlearn
from tru.commands.common import CLIError
from tru.utils import setup_logging

EXIT_INVALID = 1
EXIT_ERROR = 2
GROUPS = (data, train, unlearn, certify, bench, mlops_data, registry, pipeline)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tru", description="Targeted Reverse Update: certified unlearning for multimodal recommenders."
    )
    p.add_argument("--version", action="version", version=f"tru {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    if getattr(args, "threads", None):  # every command that takes --threads, not only training
        from tru import utils

        utils.set_threads(args.threads)
    from tru.certify import CertifyError
    from tru.checkpoint import CheckpointError
    from tru.config import ConfigError
    from tru.data.dataset import DataError
    from tru.train.trainer import TrainingError

    try:
        return int(args.func(args))
    except DataError as exc:
        print(f"error: invalid data:\n{exc}", file=sys.stderr)
        return EXIT_INVALID
    except (
        CLIError,
        CertifyError,
        CheckpointError,
        ConfigError,
        TrainingError,
        FileNotFoundError,
        ValueError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
