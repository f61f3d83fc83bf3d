"""The ACE-Step benchmark runs end to end on the tests' sizes and prints a well-formed table (no speed claims)."""

import pytest

from benchmarks import acestep_cpu

pytestmark = pytest.mark.slow


def test_the_benchmark_compares_tunesmith_with_diffusers(tmp_path):
    out = tmp_path / "results.md"
    acestep_cpu.main(["--size", "tiny", "--seconds", "10", "--cpu", "bfloat16,int8", "--markdown", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 6 and "tunesmith (AceStep.generate)" in rows[2] and "diffusers" in rows[3]
    assert "bfloat16 decoder" in rows[4] and "int8" in rows[5]
    snr = [row.split(" | ")[-1].strip(" |") for row in rows[3:]]  # against tunesmith's float32 song
    assert snr[0] == "exact" and min(float(snr[1]), float(snr[2])) > 15
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


def test_the_vae_benchmark_measures_both_initialisations(tmp_path):
    out = tmp_path / "vae.md"
    acestep_cpu.main(["--vae", "--size", "tiny", "--seconds", "2", "--markdown", str(out)])
    rows = [line.strip("| ").split(" | ") for line in out.read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 4 and "own initialisation" in rows[2][0] and "sqrt(fan in)" in rows[3][0]
    own, normal = ([[float(x) for x in cell.split(" / ")] for cell in row[1:7]] for row in rows[2:])
    assert own[0][0] > 0 and own[3][0] > 30 and own[5][0] > 30  # the whole output, bfloat16 and int8
    assert normal[0][0] > 0 and normal[3][0] > normal[5][0] > 0 and normal[3][1] > normal[5][1] > 0


def test_the_dit_benchmark_times_the_cpu_forms_alone(tmp_path):
    """--no-float32 (for the XL DiT, which fits once): each form built by consuming its own float32 module."""
    out = tmp_path / "alone.md"
    acestep_cpu.main(["--dit", "--no-float32", "--size", "tiny", "--seconds", "10", "--variants", "bfloat16,int8",
                      "--markdown", str(out)])
    rows = [line.strip("| ").split(" | ") for line in out.read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 4 and "bfloat16" in rows[2][0] and "int8" in rows[3][0]
    assert all(float(row[1]) >= 0 and float(row[2]) >= 0 and float(row[3]) > 0 for row in rows[2:])  # step, first, 8
