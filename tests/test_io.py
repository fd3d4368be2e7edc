import json

import pytest

from tvmq.io import atomic_write_json, atomic_write_text


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "sub" / "out.json"
    atomic_write_json(p, {"a": 1, "b": float("inf")})
    assert json.loads(p.read_text()) == {"a": 1, "b": None}
    atomic_write_text(p, "new")
    assert p.read_text() == "new"
    assert [q.name for q in p.parent.iterdir()] == ["out.json"]  # no temp files left


def test_failed_write_leaves_old_file(tmp_path):
    p = tmp_path / "out.json"
    p.write_text("old")
    with pytest.raises(TypeError):
        atomic_write_json(p, {"x": object()})
    assert p.read_text() == "old"
    assert [q.name for q in tmp_path.iterdir()] == ["out.json"]
