"""The ACE-Step benchmark runs end to end on the tests' sizes and prints a well-formed table (no speed claims)."""

from benchmarks import acestep_cpu


def test_the_benchmark_compares_tunesmith_with_diffusers(tmp_path):
    out = tmp_path / "results.md"
    acestep_cpu.main(["--size", "tiny", "--seconds", "10", "--bfloat16", "--markdown", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 5 and "tunesmith (AceStep.generate)" in rows[2] and "diffusers" in rows[3]
    assert "Largest difference between the two songs: 0.0e+00" in out.read_text()
