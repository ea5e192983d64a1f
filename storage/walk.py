"""Find candidate image files under a root without ever leaving it or looping.

Rules: hidden names (leading dot) are skipped; a directory is walked
whatever its name (a folder called `x.jpg` is a folder); a symlink is
followed only when its resolved target lies inside the root, and each real
directory is walked once, so link cycles end. Names that are not valid
UTF-8 cannot be stored and are skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True)
class Found:
    """Candidate paths relative to the root (POSIX, in path order) and a count of
    entries skipped for safety (links leaving the root, dangling or
    repeated links, unreadable folders, undecodable names)."""

    paths: list[str]
    skipped: int


def has_image_extension(name: str) -> bool:
    """True for the image extensions ingest accepts, in any letter case."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def path_order(path: str) -> list[str]:
    """Sort key of a relative POSIX path: folder by folder, as a sorted tree lists it, so `a/x.png`
    comes before `a b/x.png` and `a-b/x.png` (plain string order puts them after: ' ' and '-' sort
    before '/')."""
    return path.split("/")


def find_images(root: Path, exclude: Path | None = None) -> Found:
    """Walk `root` (depth first, names sorted) and return the candidate files in path order
    (`path_order`), whatever order the walk met them in.

    exclude: a directory never walked (the project folder, when it sits
    inside the image root).
    """
    walker = _Walker(os.path.realpath(root), os.path.realpath(exclude) if exclude else None)
    walker.walk()
    return Found(sorted(walker.paths, key=path_order), walker.skipped)


class _Walker:
    def __init__(self, root: str, exclude: str | None):
        self.root = root
        self.exclude = exclude
        self.paths: list[str] = []
        self.skipped = 0
        self.visited: set[tuple[int, int]] = set()
        self.linked: list[tuple[str, str]] = []

    def walk(self) -> None:
        stack = [(self.root, "")]
        while stack or self.linked:
            # Linked folders come last, so a real folder keeps its own paths.
            directory, prefix = stack.pop() if stack else self._next_linked()
            if not self._first_visit(directory):
                continue
            for entry in self._entries(directory):
                self._visit(entry, prefix, stack)

    def _next_linked(self) -> tuple[str, str]:
        self.linked.sort(key=lambda pair: pair[1])
        return self.linked.pop(0)

    def _first_visit(self, directory: str) -> bool:
        try:
            info = os.stat(directory)
        except OSError:
            self.skipped += 1
            return False
        key = (info.st_dev, info.st_ino)
        if key in self.visited or directory == self.exclude:
            self.skipped += directory != self.exclude
            return False
        self.visited.add(key)
        return True

    def _entries(self, directory: str) -> list[os.DirEntry]:
        try:
            with os.scandir(directory) as entries:
                return sorted(entries, key=lambda e: e.name, reverse=True)
        except OSError:
            self.skipped += 1
            return []

    def _visit(self, entry: os.DirEntry, prefix: str, stack: list) -> None:
        if entry.name.startswith("."):
            return
        if not _storable(entry.name):
            self.skipped += 1
            return
        relative = prefix + entry.name
        if entry.is_symlink():
            self._visit_link(entry, relative)
        elif entry.is_dir(follow_symlinks=False):
            stack.append((entry.path, relative + "/"))
        elif has_image_extension(entry.name):
            self.paths.append(relative)

    def _visit_link(self, entry: os.DirEntry, relative: str) -> None:
        target = os.path.realpath(entry.path)
        if not self._inside(target) or not os.path.exists(target):
            self.skipped += 1
        elif os.path.isdir(target):
            self.linked.append((target, relative + "/"))
        elif has_image_extension(entry.name):
            self.paths.append(relative)

    def _inside(self, path: str) -> bool:
        return path == self.root or path.startswith(self.root.rstrip(os.sep) + os.sep)


def _storable(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
