"""One-line messages for a user's mistakes: jsonargparse's type errors, and the user error in an exception chain.

Why: a wrong value in a config is the user's to fix, so the CLI says the key, the value and what is valid
on one line, and never shows a stack trace for it (``user_error`` tells such errors from bugs).
"""

from __future__ import annotations

import os
import re

from src.files import error_chain

TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def one_line(message: str) -> str:
    """jsonargparse's multi-line type errors as one line: the key, the bad value, what is valid."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    key = re.match(r'Parser key "([^"]+)"', lines[0]) if lines else None
    given = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Given value:")), None)
    expected = [line[len("- Expected a ") :] for line in lines if line.startswith("- Expected a ")]
    nested = nested_one_line(lines)
    if nested is not None:
        return nested
    if key and given is not None and expected:
        valid = " or ".join(expected).replace("typing.Literal", "one of ").replace("<class 'NoneType'>", "null")
        return f"--{key[1]}: invalid value {given!r}; valid: {valid}"
    return " ".join(lines)


def nested_one_line(lines: list[str]) -> str | None:
    """A bad value of a subclass's argument (``--data.init_args.batch_size 1.5``): its full key, value, type.

    jsonargparse reports it as the outer key (``data``) failing every Union subtype, with the inner
    ``Parser key "batch_size": Expected a <class 'int'>. Got value: 1.5`` buried in the list.
    """
    keys: list[str] = []
    for line in lines:
        if line.startswith("- Problem with given class_path"):
            keys.append("init_args")
            continue
        match = re.match(r'Parser key "([^"]+)"', line)
        if match:
            keys.append(match[1])
            continue
        bad = re.match(r"Expected a (.+?)\. Got value: (.*)$", line)
        if bad and len(keys) > 1:
            kind = re.sub(r"<class '(\w+)'>", lambda m: TYPE_NAMES.get(m[1], m[1]), bad[1])
            return f"--{'.'.join(keys)}: invalid value {bad[2].strip()!r}; valid: {kind}"
    return None


def raised_in_lr_schedule(error: BaseException) -> bool:
    """Whether ``error`` came from building the LR schedule (``configure_optimizers``, ``src/modules/lr_schedules``)."""
    traceback = error.__traceback__
    while traceback is not None:
        code = traceback.tb_frame.f_code
        if code.co_name == "configure_optimizers" or code.co_filename.endswith(
            os.path.join("modules", "lr_schedules.py")
        ):
            return True
        traceback = traceback.tb_next
    return False


def root_message(error: BaseException) -> str:
    """The first line of the innermost error in ``error``'s chain: the constructor's own words.

    jsonargparse wraps an error raised in a DataModule's ``__init__`` (a subclass-mode union) as
    "Does not validate against any of the Union subtypes"; the user needs the message under it.
    An error raised ``from None`` is a message written for the user in place of the one it caught: the walk stops
    there (it printed "module 'myfork.models' has no attribute 'Nope'" where the project had said "model.net_class:
    cannot import 'myfork.models.Nope'").
    """
    *_, innermost = error_chain(error, stop_at_from_none=True)
    lines = str(innermost).strip().splitlines()
    return lines[0] if lines else type(innermost).__name__


def user_error(error: BaseException | None, user_errors: tuple[type[BaseException], ...]) -> BaseException | None:
    """The user's mistake (one of ``user_errors``) in ``error``'s chain, if any.

    jsonargparse wraps an error raised in a DataModule's ``__init__`` in its own ``ValueError``.
    """
    return next((found for found in error_chain(error) if isinstance(found, user_errors)), None)
