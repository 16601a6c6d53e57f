"""The README's layout section is the tree's: both groups, every top-level folder, current sizes."""

from __future__ import annotations

from pathlib import Path

from offline import layout


def test_readme_layout_is_current():
    readme = (layout.ROOT / "README.md").read_text()
    assert layout.layout_section() in readme, "run `make reference`"


def test_every_top_level_folder_says_whether_it_ships():
    assert layout.undocumented() == []


def test_a_new_folder_must_be_placed(tmp_path: Path):
    for name in ("infra", "tests", "scratchpad", ".git", "__pycache__"):
        (tmp_path / name).mkdir()
    assert layout.undocumented(tmp_path) == ["scratchpad"]


def test_sizes_count_text_files_and_skip_caches(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(layout, "ROOT", tmp_path)
    (tmp_path / "infra" / "__pycache__").mkdir(parents=True)
    (tmp_path / "infra" / "a.py").write_text("x = 1\ny = 2\n")
    (tmp_path / "infra" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\x00\x01")
    (tmp_path / "infra" / "logo.png").write_bytes(b"\x89PNG\xff\xfe")
    assert layout.source_lines(tmp_path / "infra") == (1, 2)
