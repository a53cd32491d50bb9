"""benchmarks/alternatives.py runs and writes well-formed files (tiny sizes, no timing claims)."""

import csv
import importlib.util
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "alternatives.py"


def test_alternatives_benchmark_writes_medians_with_spread(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_alternatives", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        bench.main(["--device", "cpu", "--lengths", "32", "64", "--repeat", "3", "--no-errors",
                    "--threads", "1", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    rows = list(csv.DictReader((tmp_path / "alternatives_cpu.csv").open()))
    assert {r["name"] for r in rows} == set(bench.SETTINGS)
    for r in rows:
        assert 0 < float(r["seconds_min"]) <= float(r["seconds"]) <= float(r["seconds_max"])
        assert int(r["peak_bytes"]) > 0
    cross = list(csv.DictReader((tmp_path / "alternatives_crossovers_cpu.csv").open()))
    assert {c["how"] for c in cross} <= {"measured", "below", "above", "none"}
    assert (tmp_path / "alternatives_cpu.png").stat().st_size > 1000
