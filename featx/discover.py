"""discover: walk DATA_DIR, one subfolder a class, and list the image files with their labels."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from featx.errors import FeatxError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
SYSTEM_FILES = frozenset({"thumbs.db", "desktop.ini", ".ds_store"})


@dataclass
class Dataset:
    """What :func:`discover` found: images (relative paths and label indices) and skipped files."""

    root: Path
    class_names: list[str]
    paths: list[str]  # relative to root, POSIX separators, sorted within each class
    labels: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def skip_reason(name: str) -> str | None:
    """Why a file is not read as an image, judged by its name; None when it may be one."""
    if name.lower() in SYSTEM_FILES:
        return "system file"
    if name.startswith("."):
        return "hidden file"
    if not is_image_name(name):
        return f"not an image file extension ({Path(name).suffix or 'none'})"
    return None


def discover(root: str | os.PathLike, min_classes: int = 2) -> Dataset:
    """List the images under ``root/<class>/...`` (nested folders allowed), classes sorted by name."""
    root = Path(root)
    if not root.exists():
        raise FeatxError(f"data folder not found: {root}")
    if not root.is_dir():
        raise FeatxError(f"not a folder: {root}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    paths: list[str] = []
    labels: list[int] = []
    skipped: list[tuple[str, str]] = []
    class_names: list[str] = []
    for class_dir in class_dirs:
        found = _walk_class(root, class_dir, skipped)
        if not found:
            continue
        label = len(class_names)
        class_names.append(class_dir.name)
        paths.extend(found)
        labels.extend([label] * len(found))
    for p in sorted(root.iterdir()):
        if p.is_file():
            skipped.append((p.name, "file outside a class folder"))
    _check_classes(root, class_names, min_classes)
    return Dataset(root=root, class_names=class_names, paths=paths, labels=labels, skipped=skipped)


def _walk_class(root: Path, class_dir: Path, skipped: list[tuple[str, str]]) -> list[str]:
    """Image files under ``class_dir``, following symlinked folders; a folder already read (a
    symlink loop, or two links to one folder) is read once and the repeat reported."""
    found = []
    seen = {_folder_id(class_dir)}
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        subdirs = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            folder_id = _folder_id(Path(dirpath, d))
            if folder_id in seen:
                rel = Path(dirpath, d).relative_to(root).as_posix()
                skipped.append((rel + "/", "folder already read (a symlink loop or a second link)"))
            else:
                seen.add(folder_id)
                subdirs.append(d)
        dirnames[:] = subdirs
        for name in sorted(filenames):
            rel = Path(dirpath, name).relative_to(root).as_posix()
            reason = skip_reason(name)
            if reason:
                skipped.append((rel, reason))
            else:
                found.append(rel)
    return found


def _folder_id(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


def _check_classes(root: Path, class_names: list[str], min_classes: int) -> None:
    if not class_names:
        raise FeatxError(
            f"no images found in {root}: expected one subfolder per class, "
            f"e.g. {root}/cat/*.jpg and {root}/dog/*.jpg"
        )
    if len(class_names) < min_classes:
        raise FeatxError(
            f"only one class with images in {root} ({class_names[0]}): "
            f"a classifier needs at least {min_classes} class subfolders"
        )


def content_hash(data: bytes) -> str:
    """The key featx stores vectors under: sha256 of the file's bytes, hex."""
    return hashlib.sha256(data).hexdigest()


def hash_file(path: Path) -> tuple[str | None, str | None]:
    """(content hash, None), or (None, reason) for an unreadable, empty or irregular file (read
    through :func:`featx.decode.read_file`: a FIFO is refused, not waited on)."""
    from featx.decode import DecodeError, read_file

    try:
        return content_hash(read_file(path)), None
    except DecodeError as e:
        return None, str(e)
