"""User-facing errors: one clear paragraph, non-zero exit, never a bare traceback.

Every check that can fail on a user's input raises `BenchError` with a message that names the
file, slide or patient and says what to do. `cli_main` wraps a command's entry point so such an
error prints as one paragraph on stderr and exits with status 2.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable

EXIT_USER_ERROR = 2


class BenchError(Exception):
    """An error in the user's input or environment that the user can fix."""


def is_user_error(err: BaseException) -> bool:
    """A `BenchError`, or a `models.ModelError` (models/ imports nothing from bench/, so it has its own).

    Looked up in sys.modules: if the models package was never imported, none of its errors was raised.
    """
    registry = sys.modules.get("models.registry")
    return isinstance(err, BenchError) or (registry is not None and isinstance(err, registry.ModelError))


def cli_main(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Run `main(argv)`; turn a `BenchError` into a readable paragraph and exit code 2."""

    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return int(main(argv) or 0)
        except Exception as err:
            if not is_user_error(err):
                raise
            text = " ".join(str(err).split())
            # never break inside a word: paths and TCGA ids (with hyphens) must stay copyable
            para = textwrap.fill(text, width=100, subsequent_indent="  ", break_on_hyphens=False,
                                 break_long_words=False)
            print("error: " + para, file=sys.stderr)
            return EXIT_USER_ERROR

    return wrapped
