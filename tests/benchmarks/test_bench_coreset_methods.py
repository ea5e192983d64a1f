"""The core-set methods benchmark at a tiny size: every method keeps its share, balanced and not."""

from benchmarks import bench_coreset_methods
from engine.names import CORESET_METHODS


def test_every_method_keeps_its_share_at_a_tiny_size(tmp_path):
    out = tmp_path / "methods.json"
    result = bench_coreset_methods.main(["--n", "400", "--dim", "8", "--classes", "4", "--json", str(out)])
    assert out.is_file() and result["n"] == 400
    assert [(r["method"], r["balance"]) for r in result["rows"]] == [
        (m, b) for b in (True, False) for m in CORESET_METHODS
    ]
    assert all(r["seconds"] >= 0 for r in result["rows"])
