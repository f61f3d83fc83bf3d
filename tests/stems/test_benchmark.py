"""benchmarks/stems.py runs end to end and prints a well-formed table (on a tiny model: no speed claims)."""

from benchmarks import stems as bench

from .tiny import TINY


def test_the_stems_benchmark_compares_with_apply_model(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(bench, "HTDEMUCS", TINY)
    out = tmp_path / "results.md"
    bench.main(["--seconds", "1.2", "--runs", "1", "--markdown", str(out)])
    text = out.read_text()
    assert text.startswith("### htdemucs (") and "1.2 s of stereo at 44.1 kHz" in text
    assert "largest difference between the two engines' stems: 0.0e+00" in text  # same model, same calls
    rows = [line.split("|")[1:-1] for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r[0].strip() for r in rows[1:]] == ["tunesmith.separate", "demucs apply_model"]
    assert rows[2][-1].strip() == "1.00x" and all(float(r[1]) > 0 for r in rows[1:])
