"""Every file a piece of code writes, read while it exists: an audit hook notes files opened for
writing (and follows renames), a temporary tree is read just before it is removed. Used to show
that no file a deploy writes — rendered trees, caches, scratch files — ever holds the HF token."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest


class Writes:
    """The files written while a test watches: `opened` (path -> where a rename moved it) and
    `texts` (path -> its text, read while it existed)."""

    def __init__(self):
        self.opened: dict[Path, Path | None] = {}
        self.texts: dict[Path, str] = {}

    def read(self, root: Path) -> dict[Path, str]:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file():
                self.texts[path.resolve()] = path.read_text(errors="replace")
        return self.texts


_WATCHING: list[Writes] = []


def _record_writes(event: str, args: tuple) -> None:
    """Audit hook (it runs before the operation): note every file opened for writing, follow its
    renames, and read a noted file just before it is removed."""
    if not _WATCHING or event not in ("open", "os.rename", "os.remove") \
            or not isinstance(args[0], (str, os.PathLike)):
        return
    writes, path = _WATCHING[-1], Path(args[0]).resolve()
    if event == "open":
        mode, flags = args[1], args[2]
        if (mode and any(c in mode for c in "wax+")) or (mode is None and flags & (os.O_WRONLY | os.O_RDWR)):
            writes.opened[path] = None
    elif event == "os.rename" and path in writes.opened:
        writes.opened[path] = Path(args[1]).resolve()
    elif event == "os.remove" and args[1] in (None, -1) and path in writes.opened and path.is_file():
        writes.read(path)


sys.addaudithook(_record_writes)


@pytest.fixture
def written_files(tmp_path, monkeypatch):
    """Watch the files a test writes (TMPDIR, HOME and XDG_CACHE_HOME point into tmp_path): a
    temporary tree is read just before it is removed, a single file just before it is deleted."""
    for var, sub in (("TMPDIR", "tmp"), ("HOME", "home"), ("XDG_CACHE_HOME", "cache")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setattr(tempfile, "tempdir", None)
    writes = Writes()
    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):   # TemporaryDirectory's cleanup comes through here too
        writes.read(Path(path))
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    _WATCHING.append(writes)
    try:
        yield writes
    finally:
        _WATCHING.remove(writes)
