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
# The one class of a store made from a folder without class subfolders (a plain photo collection)
UNLABELLED = "(unlabelled)"


@dataclass
class Dataset:
    """What :func:`discover` found: images (relative paths and label indices) and skipped files."""

    root: Path
    class_names: list[str]
    paths: list[str]  # relative to root, POSIX separators, sorted within each class
    labels: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    @property
    def labelled(self) -> bool:
        return not is_unlabelled(self.class_names)


def is_unlabelled(class_names) -> bool:
    """Whether a store's classes are those of a folder without class subfolders."""
    return list(class_names) == [UNLABELLED]


def check_labelled(source, class_names, what: str = "a classifier") -> None:
    """Refuse an unlabelled store (or folder) where labels are needed, in one line."""
    if is_unlabelled(class_names):
        raise FeatxError(f"{source} is unlabelled (made from a folder without class subfolders): "
                         f"{what} needs one subfolder of images per class, e.g. DATA/cat/*.jpg and "
                         f"DATA/dog/*.jpg; neighbors, map, duplicates and export work on it as it is")


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


def discover(root: str | os.PathLike, min_classes: int = 2, unlabelled: bool = False) -> Dataset:
    """List the images under ``root/<class>/...`` (nested folders allowed), classes sorted by name.

    ``unlabelled``: a folder whose images lie in it directly, with no class subfolder holding any
    (a plain photo collection), gives one class, :data:`UNLABELLED`, instead of an error."""
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
    loose = sorted(p for p in root.iterdir() if not p.is_dir())
    if unlabelled and not class_names and any(skip_reason(p.name) is None for p in loose):
        return _unlabelled(root, loose, skipped)
    for p in loose:
        skipped.append((p.name, "file outside a class folder"))
    _check_classes(root, class_names, min_classes)
    return Dataset(root=root, class_names=class_names, paths=paths, labels=labels, skipped=skipped)


def _unlabelled(root: Path, files: list[Path], skipped: list[tuple[str, str]]) -> Dataset:
    """The images lying directly in ``root``, as one :data:`UNLABELLED` class."""
    paths = []
    for p in files:
        reason = skip_reason(p.name)
        if reason:
            skipped.append((p.name, reason))
        else:
            paths.append(p.name)
    return Dataset(root=root, class_names=[UNLABELLED], paths=paths, labels=[0] * len(paths),
                   skipped=skipped)


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
    if not class_names and any(p.is_file() and skip_reason(p.name) is None for p in root.iterdir()):
        raise FeatxError(
            f"{root} holds images but no class subfolders: this needs one subfolder per class, "
            f"e.g. {root}/cat/*.jpg and {root}/dog/*.jpg (featx extract makes an unlabelled store "
            f"of it, for neighbors, map, duplicates and export)")
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
