"""The throughput benchmark runs end to end (tiny checkpoint: no speed claim)."""

import pytest

from benchmarks import server_throughput

pytestmark = pytest.mark.slow


def test_server_throughput_benchmark_runs(tmp_path, monkeypatch, mono_ckpt):
    monkeypatch.setattr(server_throughput, "checkpoint_for", lambda size: mono_ckpt[0])
    out = tmp_path / "results.md"
    server_throughput.main(["--clients", "3", "--jobs", "1", "--seconds", "0.2", "--device", "cpu",
                            "--markdown", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith(("| one", "| batched"))]
    assert len(rows) == 2 and all(float(r.split("|")[5]) > 0 for r in rows)
