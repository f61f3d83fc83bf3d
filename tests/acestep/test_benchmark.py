"""The ACE-Step benchmark runs end to end on the tests' sizes and prints a well-formed table (no speed claims)."""

from benchmarks import acestep_cpu


def test_the_benchmark_compares_tunesmith_with_diffusers(tmp_path):
    out = tmp_path / "results.md"
    acestep_cpu.main(["--size", "tiny", "--seconds", "10", "--bfloat16", "--markdown", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 5 and "tunesmith (AceStep.generate)" in rows[2] and "diffusers" in rows[3]
    assert "Largest difference between the two songs: 0.0e+00" in out.read_text()


def test_the_dit_benchmark_times_each_variant_beside_float32(tmp_path):
    out = tmp_path / "dit.md"
    acestep_cpu.main(["--dit", "--size", "tiny", "--seconds", "10", "--variants", "bfloat16,diffusers-bfloat16",
                      "--markdown", str(out)])
    rows = [line.strip("| ").split(" | ") for line in out.read_text().splitlines() if line.startswith("| ")]
    (_, _, exact, ours, cast) = rows
    assert "diffusers float32" in exact[0] and exact[3:] == ["exact", "exact"]
    assert "tunesmith CPU DiT, bfloat16" in ours[0] and "cast to bfloat16" in cast[0]
    assert float(ours[4]) > 40 > float(cast[4]) > 10  # 57 against 25 dB after 8 steps here
    assert "--dit --size tiny --seconds 10 --runs 1" in out.read_text()
