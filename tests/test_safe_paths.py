"""safe_component / inside: names from outside text never leave their folder (issue #18.1)."""

from __future__ import annotations

import os

import pytest

from petctiqa.safe_paths import MAX_COMPONENT_CHARS, UnsafePathError, inside, safe_component


@pytest.mark.parametrize("name", ["P001", "LUNG1-001", "A0123", "1.2.840.10008.5", "x_y-z"])
def test_safe_names_are_kept(name):
    assert safe_component(name) == name


@pytest.mark.parametrize(
    "text",
    [
        "../../../../tmp/x",
        "..",
        ".",
        "",
        "a/b",
        "a\\b",
        ".hidden",
        "a\x00b",
        "é",
        "x" * 300,
        "CON",
        "a b",
    ],
)
def test_unsafe_text_becomes_one_plain_component(text, tmp_path):
    name = safe_component(text)
    if text == "CON":  # plain ASCII: kept (only Windows reserves it; not a traversal)
        assert name == "CON"
        return
    assert name != text
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".")
    assert 0 < len(name) <= MAX_COMPONENT_CHARS
    assert inside(tmp_path, tmp_path / name).parent == tmp_path


def test_names_are_deterministic_and_collision_free():
    texts = ["a/b", "a_b", "a:b", "a b", "a__b", "../a_b", "a_b-h" + "0" * 12]
    names = [safe_component(t) for t in texts]
    assert len(set(names)) == len(texts)
    assert names == [safe_component(t) for t in texts]
    # the cleaned form of one text is never another text kept as it is
    assert safe_component(safe_component("a/b")) != safe_component("a/b")


def test_inside_accepts_paths_below_root(tmp_path):
    assert inside(tmp_path, "a/b.png") == tmp_path / "a" / "b.png"
    assert inside(tmp_path, tmp_path) == tmp_path


def test_inside_refuses_traversal_and_symlinks_out(tmp_path):
    root = tmp_path / "out"
    root.mkdir()
    with pytest.raises(UnsafePathError, match="outside"):
        inside(root, "../x")
    with pytest.raises(UnsafePathError, match="outside"):
        inside(root, "/etc/passwd")
    os.symlink(tmp_path, root / "link")
    with pytest.raises(UnsafePathError, match="outside"):
        inside(root, root / "link" / "x.png")
