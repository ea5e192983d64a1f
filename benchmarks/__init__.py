"""Benchmarks: each module is a script (python benchmarks/bench_x.py) or a `proxy-labeler bench` part."""
