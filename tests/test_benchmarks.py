"""The benchmarks run end to end and print well-formed tables (on the tiny checkpoint: no speed claims)."""

import re
from pathlib import Path

import pytest
import numpy as np
import torch

from benchmarks import bench, common, fidelity

pytestmark = pytest.mark.slow


@pytest.fixture
def bench_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "CACHE", tmp_path / "checkpoints")
    return tmp_path


def test_checkpoints_go_under_tunesmith_cache(monkeypatch, tmp_path):
    """TUNESMITH_CACHE moves the benchmark checkpoints as it moves the kernels; TUNESMITH_BENCH_CACHE wins."""
    monkeypatch.delenv("TUNESMITH_BENCH_CACHE", raising=False)
    monkeypatch.setenv("TUNESMITH_CACHE", str(tmp_path / "cache"))
    assert common.bench_cache() == tmp_path / "cache" / "bench"
    monkeypatch.delenv("TUNESMITH_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert common.bench_cache() == tmp_path / "xdg" / "tunesmith" / "bench"
    monkeypatch.setenv("TUNESMITH_BENCH_CACHE", str(tmp_path / "mine"))
    assert common.bench_cache() == tmp_path / "mine"


def _rows(markdown: str) -> dict[str, list[str]]:
    """Table rows of a markdown text -> {first cell: the other cells}."""
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in markdown.splitlines() if line.startswith("| ")]
    return {r[0]: r[1:] for r in rows[1:] if not r[0].startswith("---")}  # without the header and rule


@pytest.mark.parametrize("stereo", [False, True], ids=["mono", "stereo"])
def test_bench_compares_tunesmith_with_transformers(bench_cache, stereo):
    out = bench_cache / "results.md"
    bench.main(["--size", "tiny", "--duration", "0.5", "--runs", "1", "--variants", "default,int8",
                "--markdown", str(out)] + (["--stereo"] if stereo else []))
    text = out.read_text()
    assert text.startswith(f"### musicgen-{'stereo-' if stereo else ''}tiny, 0.5 s, batch 1")
    rows = _rows(text)
    names = list(rows)
    assert len(names) == 3 and names[0].startswith("tunesmith default (") and names[1].startswith("tunesmith int8 (")
    assert names[2] == "transformers generate (float32)"
    for name, cells in rows.items():
        ms, rtf, wall, first, stages, weights, extra, speedup = cells
        ms, rtf = float(ms), float(rtf.rstrip("x"))
        assert ms > 0 and 0 <= float(first) <= float(wall) + 0.05
        steps = 25 + 3  # 0.5 s at 50 frames a second, and the delay pattern's 3 steps
        # 0.5 s of audio: the ms a step that the factor implies, within the printed rounding of both
        implied = 500 / ((rtf + 0.005) * steps), 500 / ((rtf - 0.005) * steps)
        assert ms - 0.05 <= implied[1] + 1e-9 and ms + 0.05 >= implied[0] - 1e-9
        assert float(weights) > 0 and float(extra) >= 0
        if name.startswith("tunesmith"):
            shares = [float(s.rstrip("%")) for s in stages.split(" / ")]
            assert len(shares) == 3 and shares[1] > 0 and sum(shares) <= 101  # T5, decoder, EnCodec
        assert re.fullmatch(r"\d+\.\dx", speedup)
    assert rows[names[2]][-1] == "1.0x"


def test_a_compiled_step_decodes_as_the_step_itself(mono_ckpt, monkeypatch):
    """bench's `compiled` variant: the static step compiled by torch.compile while the model generates (on
    CUDA the graph captures it; forced here on the CPU, where tunesmith decodes eagerly), the same greedy codes,
    and the plain step back afterwards. float16: plain linears, as on a GPU."""
    import functools
    import shutil

    from tunesmith import MusicGen
    from tunesmith.musicgen import generate, longform

    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("torch.compile on the CPU needs a C++ compiler")
    monkeypatch.setattr(longform, "generate_codes", functools.partial(generate.generate_codes, mode="static"))
    plain = MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float16")
    compiled = bench.with_compiled_step(MusicGen.from_pretrained(mono_ckpt[0], device="cpu", dtype="float16"))
    step = generate.static_step
    want, = plain.generate("calm piano", duration=0.5, seed=1, temperature=0)
    got, = compiled.generate("calm piano", duration=0.5, seed=1, temperature=0)
    assert generate.static_step is step
    np.testing.assert_array_equal(got.audio, want.audio)


def test_weights_count_parameters_and_buffers_once():
    linear = torch.nn.Linear(4, 8)
    linear.register_buffer("scales", torch.zeros(8, dtype=torch.float16))
    shared = torch.nn.Sequential(linear, linear)
    assert bench.weights_mb(shared) * 2**20 == (32 + 8) * 4 + 8 * 2


def test_fidelity_reports_each_variant(bench_cache):
    out = bench_cache / "fidelity.md"
    fidelity.main(["--size", "tiny", "--frames", "20", "--markdown", str(out)])
    rows = _rows(out.read_text())
    from tunesmith.cpu_int8 import packed_int8
    from tunesmith.musicgen import cpu_kernels

    kernels = cpu_kernels.library()
    fbgemm = packed_int8() and not (kernels is not None and kernels.int8)
    weight_only = ["int8 weight-only, float32 model"] if fbgemm else []  # fbgemm's int8 beside the old one
    assert [name.split(" (")[0] for name in rows] == ["bfloat16", "int8", "int8, float32 model", *weight_only, "int4",
                                                     "int4, float32 model"]
    assert rows.keys() >= {f"{name} (Int8Linear)" for name in weight_only}
    for top1, kl in rows.values():
        assert 0 <= float(top1.rstrip("%")) <= 100 and float(kl) >= 0
    bfloat16_top1 = next(iter(rows.values()))[0]
    assert float(bfloat16_top1.rstrip("%")) > 50  # a close variant mostly agrees


def test_stable_audio3_cpu_compares_each_form_with_the_float32_modules(tmp_path):
    from benchmarks import stable_audio3_cpu

    out = tmp_path / "sa3.md"
    stable_audio3_cpu.main(["--size", "tiny", "--seconds", "0.5", "--variants", "float32,int8,bf16",
                            "--warmup", "0.1", "--markdown", str(out)])
    text = out.read_text()
    assert text.startswith("### tiny, 0.5 s (64 latents), 8 ping-pong steps, cfg 1, batch 1")
    rows = _rows(text)
    for col in range(4):
        parts = sum(float(rows[name][col]) for name in ("text (T5Gemma, 16 tokens, once)", "DiT, all 8 steps",
                                                         "SAME-S decode (1 windows)"))
        assert abs(float(rows["end to end"][col]) - parts) < 0.02  # the stages add up (rounding)
    assert rows["speed-up over the float32 modules"][0] == "1.0x"
    dit, same, final = (float(v) for v in rows["tunesmith float32 (CPU forms)"])  # the SNR table's row
    assert dit > 100 and same > 100 and final > 100  # the same function to float32 rounding
    dit, same, final = (float(v) for v in rows["tunesmith bf16 DiT, bf16 SAME"])
    assert 35 < dit < 100 and 35 < same < 100 and 30 < final < 100


def test_stable_audio3_cpu_probes_medium_and_the_int8_decoder(tmp_path):
    """Medium's shapes (differential attention, diffusers' band-attention SAME-L) probed: one DiT step and one
    decode window of the reference's latents on every side, so the decoder's SNR is there too."""
    from benchmarks import stable_audio3_cpu

    out = tmp_path / "sa3m.md"
    stable_audio3_cpu.main(["--size", "tiny-medium", "--seconds", "0.5", "--variants", "float32,int8-same",
                            "--probe", "--warmup", "0.1", "--markdown", str(out)])
    text = out.read_text()
    assert "| float32 modules (diffusers DiT, SAME-L) (probed) |" in text
    rows = _rows(text)
    for step, steps in zip(rows["DiT step 1"], rows["DiT, all 8 steps"]):
        assert abs(8 * float(step) - float(steps)) < 0.05  # one step, extrapolated (rounding)
    assert "SAME-L decode (1 windows)" in rows
    dit, same, final = rows["tunesmith float32 (CPU forms)"]
    assert float(dit) > 100 and float(same) > 100 and final == ""  # probed: no final audio
    dit, same, final = rows["tunesmith int8 DiT, int8 SAME"]
    assert 20 < float(dit) < 100 and 20 < float(same) < 100


def test_stable_audio_cpu_compares_each_stage_with_diffusers(tmp_path):
    from benchmarks import stable_audio_cpu

    out = tmp_path / "sa.md"
    stable_audio_cpu.main(["--size", "tiny", "--runs", "1", "--variants", "default,int8,float32",
                           "--markdown", str(out)])
    text = out.read_text()
    assert text.startswith("### tiny, 0.1 s, 3 ping-pong steps, cfg 1, batch 1")
    rows = _rows(text)
    header = [c.strip() for c in text.split("\n| stage (s) | ")[1].split("\n")[0].strip(" |").split("|")]
    assert header == ["tunesmith default (bf16 DiT, bf16 VAE)", "tunesmith int8 (int8 DiT, int8 VAE)",
                      "tunesmith float32 (float32 DiT and VAE)", "diffusers float32"]
    steps = [rows[f"DiT step {i}"] for i in (1, 2, 3)]
    for col in range(4):
        total = float(rows["end to end"][col])
        parts = float(rows["text encoding (T5, 16 tokens)"][col]) + float(rows["DiT, all 3 steps"][col]) + \
            float(rows["VAE decode (32 frames)"][col])
        assert abs(total - parts) <= 0.03 and all(float(s[col]) >= 0 for s in steps)
    assert rows["speed-up, end to end"][-1] == "1.0x"
    drift = {name: cells for name, cells in rows.items() if name.startswith(("tunesmith", "for scale"))}
    assert float(drift["tunesmith float32 (float32 DiT and VAE)"][0]) > 100  # float32: rounding only
    assert 30 < float(drift["tunesmith default (bf16 DiT, bf16 VAE)"][0]) < 100



def test_style_step_times_melody_and_style_rows(tmp_path):
    from benchmarks import style_step

    out = tmp_path / "style_step.md"
    style_step.main(["--size", "tiny", "--position", "4", "--steps", "1", "--rounds", "2",
                     "--variants", "default,int8", "--markdown", str(out)])
    text = out.read_text()
    assert text.startswith("### One decode step, musicgen-tiny decoder: melody (2 rows) against style (3 rows)")
    assert "prefix ahead of the audio position: melody 247 (chroma and text), style 27 (style tokens and text)" in text
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith(("| default", "| int8"))]
    assert [(r[0].split(" (")[0], r[1]) for r in rows] == [("default", "0"), ("default", "4"), ("int8", "0"),
                                                             ("int8", "4")]
    for _, _, *cells in rows:
        melody, style2, style3, vs_melody, vs_two, melody_s, style_s = map(float, cells)
        assert min(melody, style2, style3) > 0

        def near(ratio, num, den):  # the printed ratio, from ms printed to 0.1
            return abs(ratio - num / den) <= 0.005 + 0.05 * (1 + num / den) / den + 1e-9

        assert near(vs_melody, style3, melody) and near(vs_two, style3, style2)
        # seconds per generated second: 50 steps a second
        assert abs(style_s - style3 * 50 / 1e3) <= 0.01 and abs(melody_s - melody * 50 / 1e3) <= 0.01


def _spinners() -> list[int]:
    """This machine's processes running benchmarks.busy's competitor loop."""
    from benchmarks.busy import SPINNER

    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and SPINNER.encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


def test_busy_times_each_row_idle_and_beside_competitors(tmp_path, monkeypatch):
    from benchmarks import busy

    monkeypatch.setenv("TUNESMITH_BENCH_CACHE", str(tmp_path / "checkpoints"))  # the child processes' too
    out = tmp_path / "busy.md"
    busy.main(["--size", "tiny", "--families", "musicgen", "--rows", "tunesmith:1,tunesmith:default,passive:2",
               "--competitors", "0,1", "--seconds", "0.3", "--markdown", str(out)])
    text = out.read_text()
    assert text.startswith("### CPU on a busy machine") and "--rows tunesmith:1,tunesmith:default" in text
    assert "--markdown" not in text
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| musicgen")]
    assert [r[:3] for r in rows] == [["musicgen", "tunesmith", "1"], ["musicgen", "tunesmith", "default"],
                                     ["musicgen", "passive", "2"]]
    for _, _, _, idle, busy_s, share, vs_one in rows:
        assert float(idle) > 0 and float(busy_s) > 0
        # the share is computed before the times are rounded to 0.01 s: it lies within what they allow
        low = 100 * (float(idle) - 0.005) / (float(busy_s) + 0.005)
        high = 100 * (float(idle) + 0.005) / (float(busy_s) - 0.005)
        assert low - 0.5 <= float(share.rstrip("%")) <= high + 0.5
    assert rows[0][-1] == "1.00x"
    assert not _spinners()  # every competitor stopped


@pytest.mark.parametrize("family", ["sao", "acestep", "sa3"])
def test_busy_builds_each_diffusion_family_as_load_does(family, tmp_path, monkeypatch):
    """Each family the benchmark names builds and generates at the tiny size (its real-size path shares the
    imports: a family module that moved once broke the real-size run only)."""
    from argparse import Namespace

    from benchmarks import busy

    monkeypatch.setenv("TUNESMITH_BENCH_CACHE", str(tmp_path / "checkpoints"))
    run = busy.build(family, Namespace(size="tiny", seconds=0.3, sao_seconds=1.0, acestep_seconds=10.0, steps=1))
    clip, = run()
    assert clip.audio.shape[-1] > 0 and np.isfinite(clip.audio).all()


def test_lora_merge_times_the_merge_and_both_steps(bench_cache):
    from benchmarks import lora_merge

    out = bench_cache / "lora.md"
    lora_merge.main(["--size", "tiny", "--rank", "4", "--position", "8", "--repeats", "1", "--rounds", "1",
                     "--variants", "default", "--markdown", str(out)])
    text = out.read_text()
    assert text.startswith("### A rank-4 LoRA on musicgen-tiny's decoder")
    facts = re.search(r"The adapter: (\d+) layers \(10 linears in each of (\d+) decoder layers\)\. Read and checked: "
                      r"(\d+\.\d\d) s; merged into float32 weights: (\d+\.\d\d) s\.", text)
    assert facts and int(facts[1]) == 10 * int(facts[2])
    rows = _rows(text)
    assert list(rows) == [next(iter(rows))] and next(iter(rows)).startswith("default (")
    base_s, lora_s, base_ms, lora_ms, difference = next(iter(rows.values()))
    # A tiny model loads in a few hundredths of a second on a fast CPU: the cells are read, not their size.
    assert float(base_s) >= 0 and float(lora_s) >= 0 and float(base_ms) > 0 and float(lora_ms) > 0
    implied = 100 * (float(lora_ms) / float(base_ms) - 1)
    assert abs(float(difference.rstrip("%")) - implied) < 0.2 + 100 * 0.1 / float(base_ms)  # the cells' rounding


def test_lora_merge_memory_loads_without_and_with_swap_lora(bench_cache):
    """--memory: one fresh process per load; the swappable model reports the float32 base it keeps (MB), and the
    one without swap_lora none."""
    from benchmarks import lora_merge

    out = bench_cache / "memory.md"
    lora_merge.main(["--memory", "--size", "tiny", "--variants", "default", "--markdown", str(out)])
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.read_text().splitlines()
            if line.startswith("| default (")]  # one variant, two rows: without and with swap_lora
    assert len(rows) == 2
    (_, *plain), (_, *swap) = rows
    assert plain[0] == "no" and swap[0] == "yes"
    before, after, adds, peak, base = (float(v) for v in swap[1:])
    assert 0 < before < after <= peak and abs(after - before - adds) <= 1 and base >= 0
    assert float(plain[-1]) == 0


def test_lora_merge_adapter_fits_every_layer(tmp_path):
    """The benchmark's adapter is one tunesmith reads: every layer of it placed on the decoder, shapes checked."""
    from benchmarks import lora_merge
    from tunesmith.musicgen.config import DecoderConfig

    cfg = DecoderConfig(dim=32, n_layers=2, n_heads=2, ffn_dim=64, vocab_size=16, pad_token=16, text_dim=16)
    adapter = lora_merge.write_adapter(tmp_path / "a", cfg, rank=2)
    read, merged, layers = lora_merge.merge_seconds(adapter, cfg)
    assert layers == 2 * 10 and read >= 0 and merged >= 0


def test_cpu_forms_times_each_form_of_the_step_linears(tmp_path):
    from benchmarks import cpu_forms

    out = tmp_path / "forms.md"
    variants = "float32,bfloat16+int8w,float32+int8d,float32+int4"
    cpu_forms.main(["--size", "tiny", "--position", "4", "--steps", "1", "--rounds", "2", "--variants", variants,
                    "--markdown", str(out)])
    text = out.read_text()
    assert "Memory read bandwidth" in text
    rows = _rows(text)
    assert list(rows) == variants.split(",")
    forms = {v: r[0] for v, r in rows.items()}
    assert forms["bfloat16+int8w"] == "Int8Linear" and forms["float32+int8d"] == "DynamicInt8Linear"
    assert forms["float32+int4"] == "Int4Linear" and forms["float32"] in ("PackedLinear", "Linear")
    mb = {v: float(r[1]) for v, r in rows.items()}
    assert mb["float32"] > mb["float32+int8d"] > mb["float32+int4"] > 0  # bytes per step follow the form
    for cells in rows.values():
        assert float(cells[2]) > 0 and float(cells[3]) > 0 and cells[-1].endswith("x")


def test_gpu_diffusion_dry_run_times_both_sides_of_every_family(tmp_path):
    """The GPU benchmark's dry run (tiny parts on the CPU): a table and JSON entry per family, a row per side."""
    import json

    from benchmarks import gpu_diffusion

    out, numbers = tmp_path / "gpu.md", tmp_path / "gpu.json"
    gpu_diffusion.main(["--size", "tiny", "--device", "cpu", "--runs", "1", "--families", "sa3-medium,acestep,sao",
                        "--markdown", str(out), "--json", str(numbers), "--workdir", str(tmp_path)])
    text = out.read_text()
    tables = text.split("### ")[1:]
    assert [t.split(" (")[0].split(",")[0] for t in tables] == ["Stable Audio 3 Medium", "ACE-Step 1.5 turbo",
                                                               "Stable Audio Open small's sizes"]
    pipes = ["StableAudio3Pipeline", "AceStepPipeline", "StableAudioPipeline"]
    for table, pipe, lengths in zip(tables, pipes, (["0.5", "1"], ["10"], ["0.06"])):
        rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()
                if line.startswith("| ") and not line.startswith(("| side", "| ---"))]
        assert [r[0].split(" (")[0].split(" ")[0] for r in rows] == ["tunesmith", "diffusers"] * len(lengths)
        assert any(pipe in r[0] for r in rows) and [r[1] for r in rows[::2]] == lengths
        assert all(float(r[2]) > 0 and r[-1] == "yes" for r in rows)
        assert "Speed-up of tunesmith over diffusers" in table
    results = json.loads(numbers.read_text())["results"]
    assert [r["family"] for r in results] == ["sa3-medium", "acestep", "sao"]
    for r in results:
        assert [s["name"].split()[0] for s in r["sides"]] == ["tunesmith", "diffusers"]
        for side in r["sides"]:
            assert side["finite"] and side["error"] is None and side["weights_mb"] > 0
            assert all(v["median_s"] > 0 and len(v["runs_s"]) == 1 for v in side["seconds"].values())


def test_gpu_diffusion_failure_of_one_family_leaves_the_next(tmp_path, monkeypatch, capsys):
    from benchmarks import gpu_diffusion

    def broken(size, device):
        raise RuntimeError("no such part")

    monkeypatch.setitem(gpu_diffusion.BUILDERS, "sa3-medium", broken)
    results = gpu_diffusion.main(["--size", "tiny", "--device", "cpu", "--runs", "1", "--families", "sa3-medium,sao",
                                  "--workdir", str(tmp_path)])
    assert "sa3-medium: FAILED: RuntimeError: no such part" in capsys.readouterr().out
    assert results[0]["error"].startswith("RuntimeError") and results[1]["family"] == "sao" and "sides" in results[1]


def test_check_cost_times_the_check_beside_the_plain_code(capsys):
    from benchmarks import check_cost

    check_cost.main(["--runs", "1", "--seconds", "10"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 10 s")]
    assert [r.split("|")[2].strip() for r in rows] == ["noise", "music"]
    assert all(r.rstrip(" |").endswith("yes") for r in rows)
