"""The tunesmith command. It only calls the public API; every failure is one line on stderr.

parser.py builds the parser (generate's and score's family options from the family table); one module
per command (generate, score, stems, models and download, serve); flags.py holds what generate and
score share, outputs.py the output files' names and checks."""

from __future__ import annotations

import errno
import logging
import os
import sys

from ..errors import InvalidParameter, TunesmithError
from .generate import cmd_generate
from .models import cmd_download, cmd_models
from .parser import EXIT_CHECK_FAILED, EXIT_ERROR, EXIT_USAGE, build_parser  # noqa: F401
from .score import cmd_score
from .serve import cmd_serve
from .stems import cmd_stems

log = logging.getLogger("tunesmith")


def flag_names() -> dict[str, str]:
    """Each parameter as the command line names it: 'top_k (--top-k)' (the API's keyword and the flag)."""
    from ..family import FAMILIES
    from ..params import COMMON, STEMS, shown_names

    return shown_names(COMMON, STEMS, *(spec.params for spec in FAMILIES.values()))


def said(err: TunesmithError) -> str:
    """An error's line; a refused parameter named with its flag."""
    if not isinstance(err, InvalidParameter):
        return str(err)
    return err.render({**err.names, **flag_names()})  # the request's own words for its audio input's flag


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tunesmith: %(message)s"))
    log.addHandler(handler)
    level, propagate = log.level, log.propagate  # given back at the end: main() may run inside a program
    log.setLevel(logging.INFO)
    log.propagate = False
    commands = {"generate": cmd_generate, "score": cmd_score, "stems": cmd_stems, "models": cmd_models,
                "download": cmd_download, "serve": cmd_serve}
    try:
        return commands[args.command](args)
    except TunesmithError as err:
        print(f"tunesmith: error: {said(err)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("tunesmith: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `tunesmith models | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 141
    except Exception as err:  # a bug of ours: still one line, the traceback on request
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk, whatever wrote
            print(f"tunesmith: error: {err.filename or 'a file'}: no space left on the device", file=sys.stderr)
            return EXIT_ERROR
        if os.environ.get("TUNESMITH_DEBUG"):
            raise
        print(f"tunesmith: internal error: {type(err).__name__}: {err} (set TUNESMITH_DEBUG=1 for details)",
              file=sys.stderr)
        return EXIT_ERROR
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate
