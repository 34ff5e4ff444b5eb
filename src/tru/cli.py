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

Exit codes: 0 success; 1 invalid data (validation failed); 2 bad input / usage / any other error, on one
line (``--debug`` adds the traceback); 130 interrupted. URIs in messages have their secrets redacted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from collections.abc import Sequence

from tru import __version__
from tru.commands import bench, certify, data, erase, mlops_data, pipeline, registry, train, unlearn
from tru.commands.common import (
    CLIError,
    check_output_dir,
    check_output_location,
    invocation_from_args,
    invoked,
)
from tru.utils import redact_text, setup_logging

EXIT_INVALID = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
GROUPS = (data, train, unlearn, certify, bench, mlops_data, registry, pipeline, erase)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tru", description="Targeted Reverse Update: certified unlearning for multimodal recommenders."
    )
    p.add_argument("--version", action="version", version=f"tru {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--debug", action="store_true", help="print the traceback of an unexpected error")
    sub = p.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return p


def _check_out(args: argparse.Namespace) -> None:
    """Check the command's ``--out`` before any work (see :mod:`tru.commands.common`): a folder output
    (every command with ``--overwrite``, and ``tru bench``) gets the location and overwrite rules, a
    file output (``requests generate``, ``pipeline compile``) the location rules."""
    out = getattr(args, "out", None)
    if not out:
        return
    inv = invocation_from_args(args)
    if hasattr(args, "overwrite"):
        check_output_dir(out, inv.inputs, bool(args.overwrite), inv.command)
    else:
        check_output_location(out, inv.inputs)


def _one_line(text: str) -> str:
    return " | ".join(line.strip() for line in str(text).splitlines() if line.strip())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    from tru.certify.output import CertifyError
    from tru.checkpoint import CheckpointError
    from tru.config import ConfigError
    from tru.data.dataset import DataError
    from tru.train.trainer import TrainingError

    try:
        setup_logging(args.verbose)
        if getattr(args, "threads", None):  # every command that takes --threads, not only training
            from tru import utils

            utils.set_threads(args.threads)
        with invoked(invocation_from_args(args)):
            _check_out(args)
            return int(args.func(args))
    except DataError as exc:
        print(f"error: invalid data:\n{redact_text(str(exc))}", file=sys.stderr)
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
        if debug:
            traceback.print_exc()
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:  # the reader went away (`tru ... | head`): not an error of the command
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (stdout must stay open until exit)
        return 0
    except KeyboardInterrupt:
        print(
            "error: interrupted (nothing half-written: outputs are replaced only when complete)",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    except Exception as exc:  # the last resort: one line, exit 2, the traceback only with --debug
        if debug:
            print(redact_text(traceback.format_exc()), file=sys.stderr, end="")
        message = _one_line(redact_text(str(exc))) or "(no message)"
        hint = "" if debug else " (run with --debug for the traceback)"
        print(f"error: {type(exc).__name__}: {message}{hint}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
