"""File helpers every layer may use (imports nothing of the project).

The project's one rule about files a user already has: never overwrite them. A second run into a
directory, a resumed run, a second report of the same runs -- each writes ``name-1.ext`` beside
``name.ext`` instead.
"""

from __future__ import annotations

import os


def free_path(directory: str, filename: str) -> str:
    """``directory/filename``, or ``stem-1.ext``, ``stem-2.ext``... if it exists: never overwrite a file."""
    stem, ext = os.path.splitext(filename)
    path, index = os.path.join(directory, filename), 0
    while os.path.exists(path):
        index += 1
        path = os.path.join(directory, f"{stem}-{index}{ext}")
    return path
