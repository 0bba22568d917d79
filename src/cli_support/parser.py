"""The CLI's argument parser: a mistyped option is one ``error:`` line with a suggestion, never a guess."""

from __future__ import annotations

import difflib
import re
import sys
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser

from src.cli_support.config_files import config_files_with_key
from src.cli_support.messages import one_line

# jsonargparse's words for a config key no option matches (4.32 says "nested key", newer ones "option"; a key
# outside any group is "not expected" / "not accepted").
UNKNOWN_KEY = re.compile(
    r"(?:(?:Subcommand|Group) '(?P<scope>[^']+)' does not accept (?:option|nested key)|(?:Option|Key))"
    r" '(?P<key>[^']+)'"
)


class ArgumentParser(LightningArgumentParser):
    """Parse errors as one ``error: ...`` line (no page of usage) and exit status 2; no abbreviated options.

    ``allow_abbrev=False``: argparse would otherwise take ``--trainer.max_epoch 2`` as the only option it
    is a prefix of (``--trainer.max_epochs``); a typo must be an error, not a guess.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self._given: list[str] | None = None

    def parse_args(self, *args: Any, **kwargs: Any) -> Any:
        """Keep the command line: an unknown key in a config file is reported with the file it is in."""
        given = args[0] if args else kwargs.get("args")
        self._given = list(sys.argv[1:] if given is None else given)
        return super().parse_args(*args, **kwargs)

    def _known_options(self) -> list[str]:
        """Every ``--option`` of this parser and of its subcommands."""
        known = set(self._option_string_actions)
        action = getattr(self, "_subcommands_action", None)
        subcommands = action.choices if action else {}
        for parser in subcommands.values():
            known |= set(parser._option_string_actions)
        return sorted(known)

    def _suggest_key(self, message: str) -> str:
        """``Subcommand 'fit' does not accept option 'trainer.max_step'`` + the config file(s) holding that key
        and the option it was probably meant as -- the same hint the typo gets as a ``--flag``."""
        match = UNKNOWN_KEY.search(message)
        if match is None:
            return message
        key = match["key"]
        if message.startswith("Group"):
            key = f"{match['scope']}.{key}"
        close = difflib.get_close_matches(f"--{key}", self._known_options(), n=1, cutoff=0.8)
        files = config_files_with_key(self._given if self._given is not None else sys.argv[1:], key)
        where = f"in {', '.join(files)}" if files else ""
        hint = f"did you mean '{close[0][2:]}'?" if close else ""
        extra = "; ".join(part for part in (where, hint) if part)
        return f"{message} ({extra})" if extra else message

    def _suggest(self, message: str) -> str:
        """``unrecognized arguments: --trainer.max_epoch 2`` + the options the unknown ones were probably meant as."""
        known = self._known_options()
        unknown = [word.split("=")[0] for word in message.split(":", 1)[1].split() if word.startswith("--")]
        hints = []
        for option in unknown:
            close = difflib.get_close_matches(option, known, n=1, cutoff=0.8)
            if close:
                hints.append(f"{option} -> {close[0]}?")
        return f"{message} (did you mean: {', '.join(hints)})" if hints else message

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:
            super().error(message, ex)
        if message.startswith("unrecognized arguments:"):
            message = self._suggest(message)
        else:
            message = self._suggest_key(message)
        sys.stderr.write(f"error: {one_line(message)}\n(python -m src.cli <subcommand> --help lists every option)\n")
        sys.exit(2)
