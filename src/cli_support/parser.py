"""The CLI's argument parser: a mistyped option is one ``error:`` line with a suggestion, never a guess."""

from __future__ import annotations

import difflib
import sys
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser

from src.cli_support.messages import one_line


class ArgumentParser(LightningArgumentParser):
    """Parse errors as one ``error: ...`` line (no page of usage) and exit status 2; no abbreviated options.

    ``allow_abbrev=False``: argparse would otherwise take ``--trainer.max_epoch 2`` as the only option it
    is a prefix of (``--trainer.max_epochs``); a typo must be an error, not a guess.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def _suggest(self, message: str) -> str:
        """``unrecognized arguments: --trainer.max_epoch 2`` + the options the unknown ones were probably meant as."""
        known = set(self._option_string_actions)
        action = getattr(self, "_subcommands_action", None)
        subcommands = action.choices if action else {}
        for parser in subcommands.values():
            known |= set(parser._option_string_actions)
        unknown = [word.split("=")[0] for word in message.split(":", 1)[1].split() if word.startswith("--")]
        hints = []
        for option in unknown:
            close = difflib.get_close_matches(option, sorted(known), n=1, cutoff=0.8)
            if close:
                hints.append(f"{option} -> {close[0]}?")
        return f"{message} (did you mean: {', '.join(hints)})" if hints else message

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        if message.startswith("unrecognized arguments:"):
            message = self._suggest(message)
        sys.stderr.write(f"error: {one_line(message)}\n(python -m src.cli <subcommand> --help lists every option)\n")
        sys.exit(2)
