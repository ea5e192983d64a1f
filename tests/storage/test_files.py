"""atomic_write: a reader sees the old file or the new one, never half of it."""

from __future__ import annotations

import numpy as np
import pytest

from storage import atomic_write


def test_the_file_appears_whole_and_no_temporary_file_is_left(tmp_path):
    dest = tmp_path / "sub" / "data.json"
    with atomic_write(dest) as tmp:
        assert tmp.parent == dest.parent and tmp.name.startswith(".") and tmp.suffix == ".json"
        tmp.write_text('{"a": 1}')
        assert not dest.exists()  # nothing at the destination until the block ends
    assert dest.read_text() == '{"a": 1}'
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data.json"]


def test_an_error_while_writing_leaves_the_old_file_and_no_temporary_file(tmp_path):
    dest = tmp_path / "data.json"
    dest.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_write(dest) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("disk full")
    assert dest.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.json"]


def test_numpy_writes_to_the_temporary_name_it_is_given(tmp_path):
    dest = tmp_path / "rows.npy"  # np.save appends .npy to a name without it: the suffix is kept
    with atomic_write(dest) as tmp:
        np.save(tmp, np.arange(3))
    assert np.load(dest).tolist() == [0, 1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.npy"]
