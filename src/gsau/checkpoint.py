"""Checkpoints: written atomically (temp file + rename), read without executing pickled code."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from gsau.atomic import write_atomic
from gsau.errors import GsauError


def _written(path: Path, write) -> None:
    """An atomic write, or a one-line error naming the file (read-only directory, disk full): the
    file it would replace is left as it was."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, write)
    except OSError as e:
        raise GsauError(f"{path}: cannot write ({e.strerror or e})") from None


def save(obj, path: str | Path) -> None:
    _written(Path(path), lambda f: torch.save(obj, f))


def load(path: str | Path):
    path = Path(path)
    if not path.exists():
        raise GsauError(f"{path}: no checkpoint here")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file: say so, do not unpickle arbitrary code
        first_line = (str(e).splitlines() or ["empty file"])[0]
        raise GsauError(f"{path}: unreadable checkpoint ({type(e).__name__}: {first_line})") from None


def write_text(path: str | Path, text: str) -> None:
    _written(Path(path), lambda f: f.write(text.encode("utf-8")))


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")
