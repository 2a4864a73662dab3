from pathlib import Path

import pytest

from featx.discover import discover
from featx.errors import FeatxError
from tests.conftest import make_images


def test_classes_sorted_and_extensions_case_insensitive(tmp_path: Path):
    make_images(tmp_path, {"b_dog": 2, "a_cat": 2})
    (tmp_path / "a_cat" / "upper.JPG").write_bytes((tmp_path / "a_cat" / "a_cat_000.jpg").read_bytes())
    (tmp_path / "a_cat" / "nested").mkdir()
    (tmp_path / "a_cat" / "nested" / "x.PNG").write_bytes(b"whatever")
    ds = discover(tmp_path)
    assert ds.class_names == ["a_cat", "b_dog"]
    assert "a_cat/upper.JPG" in ds.paths and "a_cat/nested/x.PNG" in ds.paths
    assert ds.labels == [0] * 4 + [1] * 2


def test_system_and_non_image_files_are_reported(tmp_path: Path):
    make_images(tmp_path, {"cat": 1, "dog": 1})
    for name in ("Thumbs.db", ".DS_Store", "notes.txt"):
        (tmp_path / "cat" / name).write_bytes(b"x")
    (tmp_path / "README").write_text("hi")
    reasons = dict(discover(tmp_path).skipped)
    assert reasons["cat/Thumbs.db"] == "system file"
    assert reasons["cat/.DS_Store"] == "system file"
    assert "not an image" in reasons["cat/notes.txt"]
    assert reasons["README"] == "file outside a class folder"


@pytest.mark.parametrize("setup, message", [
    (lambda p: None, "not found"),
    (lambda p: p.mkdir(), "no images found"),
    (lambda p: make_images(p, {"cat": 2}), "only one class"),
])
def test_unusable_folders_raise(tmp_path: Path, setup, message):
    folder = tmp_path / "data"
    setup(folder)
    with pytest.raises(FeatxError, match=message):
        discover(folder)


def test_symlinked_folders_inside_a_class_are_followed_once(tmp_path: Path):
    make_images(tmp_path / "data", {"cat": 1, "dog": 1})
    make_images(tmp_path / "elsewhere", {"batch": 2}, seed=1)
    cat = tmp_path / "data" / "cat"
    (cat / "batch1").symlink_to(tmp_path / "elsewhere" / "batch")  # cat/batch1 -> elsewhere
    (cat / "again").symlink_to(tmp_path / "elsewhere" / "batch")  # the same folder twice
    (cat / "loop").symlink_to(cat)  # a loop back to the class folder
    ds = discover(tmp_path / "data")
    cats = [p for p, y in zip(ds.paths, ds.labels) if y == 0]
    assert cats == ["cat/cat_000.jpg", "cat/again/batch_000.jpg", "cat/again/batch_001.jpg"]
    reasons = dict(ds.skipped)
    assert "already read" in reasons["cat/batch1/"] and "already read" in reasons["cat/loop/"]
