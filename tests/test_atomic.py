import json

import pytest

from rsuper.atomic import atomic_path, write_json_atomic


def test_atomic_path_replaces_only_on_success(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    with atomic_path(target) as tmp:
        assert tmp.name.endswith(".csv") and tmp.parent == target.parent
        tmp.write_text("a,b\n")
    assert target.read_text() == "a,b\n"

    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "a,b\n"
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.csv"]


def test_write_json_atomic(tmp_path):
    write_json_atomic(tmp_path / "x.json", {"spacing_mm": [1.0, 1.0, 2.5]})
    assert json.loads((tmp_path / "x.json").read_text()) == {"spacing_mm": [1.0, 1.0, 2.5]}
