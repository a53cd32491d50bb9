"""The lecture-09 benchmark scripts run and write well-formed CSV (tiny sizes, no timing)."""

import csv
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_benchmark_help_works_without_a_gpu():
    res = subprocess.run([sys.executable, str(BENCH / "flash_gpu.py"), "--help"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "--dry-run" in res.stdout
    assert "--budget-s" in res.stdout


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_gpu_benchmark_dry_run_writes_a_well_formed_csv(tmp_path, capsys):
    bench = load("flash_gpu")
    assert bench.main(["--dry-run", "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "flash_gpu.csv").open()))
    assert list(rows[0]) == bench.FIELDS
    impls = {r["impl"] for r in rows}
    assert {"course triton", "sdpa flash", "sdpa cudnn", "sdpa efficient", "sdpa math",
            "naive torch"} <= impls
    assert {(r["mode"], r["causal"]) for r in rows} == {
        (m, c) for m in ("fwd", "fwd+bwd") for c in ("False", "True")}
    for r in rows:
        assert r["status"] == "ok" or r["status"].startswith(("error: ", "skipped: ")), r
        assert r["torch"] == torch.__version__
        assert r["device"]
        assert r["date"]
        if r["status"] == "ok":
            assert float(r["ms"]) > 0
            assert float(r["tflops"]) >= 0
            assert r["T"] == "64"
    ours = [r for r in rows if r["impl"] == "course triton"]
    assert all(r["status"] == "ok" for r in ours), ours
    summary = list(csv.DictReader((tmp_path / "flash_gpu_summary.csv").open()))
    assert summary
    assert all(float(s["fwd_ratio"]) > 0 for s in summary)
    if importlib.util.find_spec("matplotlib"):
        assert (tmp_path / "flash_gpu_float16.png").stat().st_size > 1000


def test_gpu_benchmark_flop_count():
    bench = load("flash_gpu")
    assert bench.flops(2, 3, 100, 64, False, "fwd") == 4 * 2 * 3 * 100**2 * 64
    # causal: half the products; backward: 2.5 times the forward's
    assert bench.flops(2, 3, 100, 64, True, "fwd+bwd") == 4 * 0.5 * 3.5 * 2 * 3 * 100**2 * 64


def test_cpu_benchmark_runs_and_writes_csv(tmp_path):
    bench = load("flash_cpu")
    threads = torch.get_num_threads()
    try:
        assert bench.main(["--T", "256", "--heads", "2", "--blocks", "32", "64", "--repeat", "3",
                           "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)
    rows = list(csv.DictReader((tmp_path / "flash_cpu.csv").open()))
    assert [r["impl"].split(",")[0] for r in rows] == (
        ["torch SDPA"] * 4 + ["tiled numpy"] * 4)
    # each variant keeps its own timings, also where two variants share a name: pooled
    # timings would repeat exactly (the tiled rows take tens of ms, so four decimals of
    # three statistics do not coincide by chance; SDPA's sub-ms rows could)
    timings = [(r["min_s"], r["median_s"], r["max_s"]) for r in rows if r["impl"].startswith("tiled")]
    assert len(set(timings)) == len(timings) == 4
    for r in rows:
        assert r["repeats"] == "3"
        assert 0 < float(r["min_s"]) <= float(r["q25_s"]) <= float(r["median_s"])
        assert float(r["median_s"]) <= float(r["q75_s"]) <= float(r["max_s"])
        assert math.isfinite(float(r["extra_peak_mib"]))
        assert float(r["max_abs_diff_vs_sdpa"]) < 1e-5
        assert r["T"] == "256"
        assert r["OPENBLAS_NUM_THREADS"]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="needs triton")
def test_lecture_09_plots_committed_gpu_results(tmp_path, monkeypatch, capsys):
    """The lecture's results cells on a results folder as a GPU run would leave it (the
    dry run's CSV, its device renamed): the plot and the ratios appear, nothing raises."""
    import json

    import matplotlib

    matplotlib.use("Agg")
    bench = load("flash_gpu")
    results = tmp_path / "benchmarks" / "results"
    assert bench.main(["--dry-run", "--out", str(results)]) == 0
    for name in ("flash_gpu.csv", "flash_gpu_summary.csv"):
        path = results / name
        path.write_text(path.read_text().replace("CPU (Triton interpreter)", "Test GPU"))
    cells = json.loads((BENCH.parent / "notebooks" / "09_flash_attention.ipynb").read_text())
    sources = ["".join(c["source"]) for c in cells["cells"] if c["cell_type"] == "code"]
    setup = next(s for s in sources if "def results_dir" in s)
    plot = next(s for s in sources if "flash_gpu.csv" in s)
    monkeypatch.chdir(tmp_path)
    import matplotlib.pyplot as plt

    namespace = {"plt": plt}
    capsys.readouterr()
    exec(setup, namespace)
    exec(plot, namespace)
    out = capsys.readouterr().out
    assert "No GPU benchmark results" not in out
    assert "course kernel / best SDPA backend, TFLOP/s ratio (Test GPU)" in out
    assert "forward" in out
    assert "backward" in out
    assert plt.get_fignums()  # a figure was drawn
    plt.close("all")
