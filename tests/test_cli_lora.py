"""The tunesmith command's --lora, --bpm, --key, --time-signature and --bars: files written, one-line refusals."""

import numpy as np
import pytest
import soundfile as sf
import torch

from tunesmith.audio.meter import bars_seconds

from .lora_adapters import peft_layers, write_peft_folder, write_single_file
from .test_cli import one_error_line, run

TARGETS = ["q_proj", "v_proj", "fc1"]


@pytest.fixture(scope="module")
def adapter(mono_ckpt, tmp_path_factory):
    layers = peft_layers(mono_ckpt[1], TARGETS, 4, 8, seed=3, size=0.5)
    return write_peft_folder(tmp_path_factory.mktemp("cli-lora"), layers, 4, 8, TARGETS)


@pytest.mark.slow
def test_lora_changes_the_file_and_scale_zero_is_the_base(mono_ckpt, adapter, tmp_path):
    args = ("generate", "jazz", "-m", mono_ckpt[0], "-d", "0.4", "--seed", "5", "--quiet", "--temperature", "0")
    base, lora, zero = tmp_path / "base.wav", tmp_path / "lora.wav", tmp_path / "zero.wav"
    for out, extra in ((base, ()), (lora, ("--lora", f"{adapter}@1.5")), (zero, ("--lora", f"{adapter}@0"))):
        proc = run(*args, *extra, "-o", out)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == str(out)
    a, b, c = (sf.read(p)[0] for p in (base, lora, zero))
    assert a.shape == b.shape and np.abs(a - b).max() > 1e-3  # the adapter is merged
    np.testing.assert_array_equal(a, c)  # scale 0 adds nothing


@pytest.mark.slow
def test_bars_set_the_file_length_and_the_line_says_the_seed(mono_ckpt, tmp_path):
    out = tmp_path / "bars.wav"
    proc = run("generate", "jazz", "-m", mono_ckpt[0], "--bpm", "300", "--bars", "1", "--key", "c minor",
               "--time-signature", "2/4", "--seed", "2", "--quiet", "-o", out)
    assert proc.returncode == 0, proc.stderr
    audio, rate = sf.read(out)
    assert len(audio) == round(bars_seconds(1, 300, 2) * rate)  # 0.4 s
    assert "seed 2" in proc.stderr


def test_the_clip_line_shows_a_detected_tempo(mono_ckpt, tmp_path, monkeypatch):
    """The line names the tempo the estimator found: here the clip's check is made to find 120 bpm."""
    import logging

    from tunesmith.audio import checks
    from tunesmith.cli import main

    monkeypatch.setattr(checks, "estimate_tempo", lambda audio, rate: 120.0)
    records = []
    handler = logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logging.getLogger("tunesmith").addHandler(handler)
    try:
        code = main(["generate", "jazz", "-m", str(mono_ckpt[0]), "-d", "0.3", "--seed", "4", "--quiet",
                     "-o", str(tmp_path / "t.wav")])
    finally:
        logging.getLogger("tunesmith").removeHandler(handler)
    assert code in (0, None)
    assert "seed 4, tempo 120.0 bpm (detected)" in records


@pytest.mark.parametrize("args, message", [
    (["--lora", "missing.safetensors"], "--lora: missing.safetensors does not exist"),
    (["--lora", "ok.safetensors@2.5"], "--lora: a scale must be a number from -2 to 2, got 2.5"),
    (["--lora", "bad.safetensors"], "LoRA bad.safetensors is not a safetensors file"),
    (["--lora", "pickled"], "holds adapter_model.bin, a pickle"),
    (["--bpm", "500"], "bpm (--bpm) must be a tempo from 30 to 300 beats a minute"),
    (["--key", "H major"], "key (--key) must be a tonic and a mode"),
    (["--time-signature", "5"], "time_signature (--time-signature) must be 2, 3, 4 or 6 beats per bar"),
    (["--time-signature", "7/8"], "time_signature (--time-signature) must be 2, 3, 4 or 6 beats per bar (2/4, 3/4, "
                                  "4/4, 6/8), got '7/8'"),
    (["--bars", "4"], "bars (--bars) needs bpm (--bpm)"),
    (["--bpm", "120", "--bars", "4", "-d", "3"], "disagree: give one of them"),
    (["--bpm", "fast"], "argument --bpm: invalid float value"),
])
def test_bad_values_are_one_line(mono_ckpt, tmp_path, args, message):
    (tmp_path / "bad.safetensors").write_bytes(b"\x80\x04not a safetensors file at all")
    write_single_file(tmp_path / "ok.safetensors", {"x.lora_A.weight": torch.zeros(1, 2),
                                                    "x.lora_B.weight": torch.zeros(2, 1)}, alpha=1.0, prefix="")
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "adapter_model.bin").write_bytes(b"\x80\x04")
    line = one_error_line(run("generate", "jazz", "-m", mono_ckpt[0], "--quiet", *args, cwd=tmp_path))
    assert message in line
    assert not list(tmp_path.glob("*.wav"))


@pytest.mark.slow
def test_an_adapter_of_another_model_is_one_line(mono_ckpt, tmp_path):
    """Shapes are checked against the model before its weights load: the first mismatched layer is named."""
    layers = {"model.decoder.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 7),
              "model.decoder.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(7, 4)}
    folder = write_peft_folder(tmp_path / "other", layers, 4, 4, ["q_proj"])
    line = one_error_line(run("generate", "jazz", "-m", mono_ckpt[0], "-d", "0.3", "--quiet", "--lora", folder,
                              cwd=tmp_path))
    assert "q_proj" in line
    assert not list(tmp_path.glob("*.wav"))
