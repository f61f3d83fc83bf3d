"""The tunesmith command, run as users run it, checked by exit status, output and files: in this process (what
`python -m tunesmith` does, without importing torch again for every run: tests/in_process.py), and in a
subprocess where the process is the point (the hub's variables read at import, signals, resource limits)."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from .full_disk import fill, full_partial, needs_dev_full, small_disk
from .in_process import honoured, run_cli

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def run(*args, cwd=None, env=None, subprocess=False):
    """`tunesmith ARGS` with HF_HUB_OFFLINE=1 (env may turn the hub back on) -> CompletedProcess. In this
    process unless `subprocess` is set or env holds a variable a run in this process cannot honour."""
    args, env = [str(a) for a in args], env or {}
    proc = _in_a_process(args, cwd, env) if subprocess or not honoured(env) else run_cli(args, cwd, env)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _in_a_process(args, cwd, env):
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-m", "tunesmith", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=300)


def one_error_line(proc):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and lines[0].startswith("tunesmith: error: "), proc.stderr
    return lines[0]


def test_generate_writes_a_named_wav_and_prints_its_path(mono_ckpt, tmp_path):
    proc = run("generate", "calm lofi piano with vinyl crackle, 80 bpm", "-m", mono_ckpt[0], "-d", "0.5",
               "--seed", "42", cwd=tmp_path, subprocess=True)  # one generate end to end, as users run it
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "calm-lofi-piano-with-vinyl-crackle-80-42.wav"  # slug cut at 40 chars on a word
    assert proc.stdout.strip() == path.name and path.exists()
    info = sf.info(str(path))
    assert info.samplerate == 32000 and info.frames == 16000 and info.channels == 1
    assert "generating" in proc.stderr and "seed 42" in proc.stderr


@pytest.mark.slow
def test_variations_and_several_prompts(mono_ckpt, tmp_path):
    proc = run("generate", "deep house", "--text", "bossa nova guitar", "-n", "2", "-m", mono_ckpt[0], "-d", "0.3",
               "--seed", "5", "-o", tmp_path / "out.flac", "--quiet")
    assert proc.returncode == 0, proc.stderr
    names = [os.path.basename(line) for line in proc.stdout.split()]
    assert names == ["out-1.flac", "out-2.flac", "out-3.flac", "out-4.flac"]
    assert "seed 5, 'deep house'" in proc.stderr and "seed 6, 'bossa nova guitar'" in proc.stderr
    data = [sf.read(str(tmp_path / n))[0] for n in names]
    assert all(d.shape == (9600,) for d in data) and abs(data[0] - data[1]).max() > 1e-3


@pytest.mark.slow
def test_same_seed_same_file_and_no_silent_overwrite(mono_ckpt, tmp_path):
    args = ("generate", "jazz", "-m", mono_ckpt[0], "-d", "0.3", "--seed", "9", "--quiet")
    assert run(*args, cwd=tmp_path).returncode == 0
    assert run(*args, cwd=tmp_path).returncode == 0  # auto names never replace a file
    first, second = tmp_path / "jazz-9.wav", tmp_path / "jazz-9-2.wav"
    assert (sf.read(str(first))[0] == sf.read(str(second))[0]).all()
    before = first.read_bytes()
    line = one_error_line(run(*args, "-o", first))
    assert "exists" in line and "--overwrite" in line and first.read_bytes() == before
    assert run(*args, "-o", first, "--overwrite").returncode == 0


@pytest.mark.slow
def test_strict_flags_a_failed_check(mono_ckpt, tmp_path):
    """The tiny random model makes noise-like audio: written, warned about, and --strict exits 3."""
    from tunesmith import MusicGen

    clip, = MusicGen.from_pretrained(mono_ckpt[0], device="cpu").generate("jazz", duration=0.5, seed=1)
    proc = run("generate", "jazz", "-m", mono_ckpt[0], "-d", "0.5", "--seed", "1", "--strict", "--quiet",
               cwd=tmp_path)
    assert (tmp_path / "jazz-1.wav").exists()
    if clip.check.ok:
        assert proc.returncode == 0
    else:
        assert proc.returncode == 3 and "failed the output check" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["-d", "0"], "positive"), (["-d", "-2"], "positive"), (["-d", "nan"], "positive"), (["-d", "abc"], "not a number"),
    (["-d", "5000"], "3600 s"), (["--temperature", "-1"], "temperature"), (["--top-k", "-1"], "top_k"),
    (["--top-p", "3"], "top_p"), (["--cfg", "0"], "cfg"), (["--seed", "-4"], "seed"), (["-n", "0"], "-n"),
    (["-o", "x.aiff"], "unsupported output format"), (["-o", "/nonexistent/dir/x.wav"], "does not exist"),
    (["--device", "tpu"], "invalid choice"), (["--dtype", "int3"], "invalid choice"),
])
def test_bad_generate_input_is_one_line(mono_ckpt, tmp_path, args, message):
    line = one_error_line(run("generate", "jazz", "-m", mono_ckpt[0], "--quiet", *args, cwd=tmp_path))
    assert message in line
    assert not list(tmp_path.iterdir())


def test_unwritable_output(mono_ckpt, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    assert "permission denied" in one_error_line(run("generate", "jazz", "-m", mono_ckpt[0], "-o", locked / "a.wav"))


@pytest.mark.parametrize("model, message", [
    ("no-such-alias", "unknown model 'no-such-alias'"),
    ("./missing-folder", "no such folder: ./missing-folder"),
    ("a/b/c", "no such folder: a/b/c"),
    ("facebook/musicgen-small", "not in the local Hugging Face cache and HF_HUB_OFFLINE is set"),
])
def test_bad_models(model, message, tmp_path):
    line = one_error_line(run("generate", "jazz", "-m", model, env={"HF_HUB_CACHE": str(tmp_path)}))
    assert message in line


@pytest.mark.slow
def test_truncated_checkpoint_is_one_line(mono_ckpt, tmp_path):
    folder = tmp_path / "cut"
    shutil.copytree(mono_ckpt[0], folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    assert "damaged or incomplete" in one_error_line(run("generate", "jazz", "-m", folder, cwd=tmp_path))


def _fake_cache(cache, repo, source):
    """Lay out a checkpoint as huggingface_hub's cache holds a download of `repo`."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    shutil.copytree(source, root / "snapshots" / COMMIT)


@pytest.mark.slow
def test_hub_id_and_alias_load_from_the_cache_offline(mono_ckpt, tmp_path):
    """The alias in a process of its own, end to end: huggingface_hub reads HF_HUB_CACHE when it is imported (the
    other runs in this process read it again: tests/in_process.py)."""
    cache = tmp_path / "hub"
    _fake_cache(cache, "facebook/musicgen-small", mono_ckpt[0])
    _fake_cache(cache, "someone/tiny-musicgen", mono_ckpt[0])
    env = {"HF_HUB_CACHE": str(cache)}
    for model in ("small", "someone/tiny-musicgen"):
        proc = run("generate", "jazz", "-m", model, "-d", "0.2", "--seed", "1", "--quiet", "-o",
                   tmp_path / f"{model.replace('/', '_')}.wav", env=env, subprocess=model == "small")
        assert proc.returncode == 0, proc.stderr
    listing = run("models", env=env)
    rows = {line.split()[0]: line.split()[-1] for line in listing.stdout.splitlines()[1:]}
    assert rows["small"] == "yes" and rows["medium"] == "no" and rows["stereo-large"] == "no"
    assert "facebook/musicgen-stereo-medium" in listing.stdout and "1.5B" in listing.stdout
    downloaded = run("download", "small", env=env)
    assert downloaded.returncode == 0 and downloaded.stdout.strip().endswith(COMMIT)
    line = one_error_line(run("download", "medium", env=env))
    assert "HF_HUB_OFFLINE is set: downloading needs the network; unset HF_HUB_OFFLINE" in line


# The hub refused at once, as on a machine without network (HF_HUB_OFFLINE unset, no proxy in the way).
NO_HUB = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9", "HTTPS_PROXY": "", "https_proxy": "",
          "HTTP_PROXY": "", "http_proxy": "", "ALL_PROXY": "", "all_proxy": ""}


@pytest.mark.parametrize("env, reason", [({}, "HF_HUB_OFFLINE is set"),
                                         (NO_HUB, "the Hugging Face hub cannot be reached (127.0.0.1: connection refused)")])
def test_a_model_not_cached_offline_says_download_or_folder(tmp_path, env, reason):
    """Without network a hub model fails at once (no retries) and says the two ways on. An error line end to end,
    in a process that reads the hub's variables as it starts."""
    line = one_error_line(run("generate", "jazz", "-m", "small", env={"HF_HUB_CACHE": str(tmp_path), **env},
                              subprocess=True))
    assert f"model facebook/musicgen-small is not in the local Hugging Face cache and {reason}: " in line
    assert "run 'tunesmith download small' where there is network" in line and "-m FOLDER" in line


@pytest.mark.parametrize("env, todo", [({}, "unset HF_HUB_OFFLINE"), (NO_HUB, "connect to the network and try again")])
def test_download_without_network_says_it_needs_the_network(tmp_path, env, todo):
    line = one_error_line(run("download", "small", env={"HF_HUB_CACHE": str(tmp_path), **env}))
    assert f"downloading needs the network; {todo}" in line and "tunesmith download" not in line


def test_download_of_a_local_folder(mono_ckpt, tmp_path):
    proc = run("download", mono_ckpt[0])
    assert proc.returncode == 0 and proc.stdout.strip() == str(mono_ckpt[0])
    assert "local checkpoint folder already" in proc.stderr
    (tmp_path / "empty").mkdir()
    assert "without a checkpoint" in one_error_line(run("download", tmp_path / "empty"))
    assert "no such folder: ./nowhere" in one_error_line(run("download", "./nowhere", cwd=tmp_path))


def test_a_mistyped_folder_is_not_taken_for_a_hub_id(tmp_path):
    """`ckpt/tyni` with a folder `ckpt` here is a path, even with one '/' as in a hub id."""
    (tmp_path / "ckpt" / "tiny").mkdir(parents=True)
    line = one_error_line(run("generate", "jazz", "-m", "ckpt/tyni", cwd=tmp_path, env=NO_HUB))
    assert line.endswith("no such folder: ckpt/tyni (did you mean ckpt/tiny?)")


def test_hf_home_is_honoured(mono_ckpt, tmp_path):
    _fake_cache(tmp_path / "home" / "hub", "facebook/musicgen-small", mono_ckpt[0])
    env = {"HF_HOME": str(tmp_path / "home")}
    os.environ.pop("HF_HUB_CACHE", None)
    proc = run("models", env=env, subprocess=True)  # HF_HOME, read as huggingface_hub is imported
    assert [line.split()[-1] for line in proc.stdout.splitlines() if line.startswith("small ")] == ["yes"]


@pytest.mark.parametrize("args, message", [
    (["--prompt", "0:intro", "--prompt", "5:drums", "-d", "3"], "not inside"),
    (["--prompt", "2:intro", "-d", "3"], "start at 0"),
    (["--prompt", "0:intro", "--prompt", "0:again", "-d", "3"], "increase"),
    (["--prompt", "intro"], "SECONDS:TEXT"),
    (["jazz", "--prompt", "0:intro"], "not both"),
    (["--continue", "missing.wav"], "does not exist"),
    (["--continue", "notes.txt"], "not an audio file"),
    (["--continue", "silence.wav"], "silence.wav is silent: there is nothing to continue"),
    (["--continue", "empty.wav"], "empty.wav is empty: there is nothing to continue"),
    (["--continue", "short.wav"], "short.wav lasts 10.0 ms, less than one frame (20 ms)"),
    (["--melody", "empty.wav"], "empty.wav is empty: there is no tune to follow"),
    (["--melody", "silence.wav"], "silence.wav is silent: there is no tune to follow"),
    (["--loop", "--fade-out", "1"], "seamless loop"),
    (["--loudness", "5"], "between -70 and 0"),
    (["--wav-format", "pcm8"], "invalid choice"),
])
def test_bad_long_form_and_finishing_input(mono_ckpt, tmp_path, args, message):
    (tmp_path / "notes.txt").write_text("not audio")
    sf.write(str(tmp_path / "silence.wav"), [0.0] * 16000, 16000)
    sf.write(str(tmp_path / "empty.wav"), np.zeros((0, 1)), 16000)
    sf.write(str(tmp_path / "short.wav"), 0.3 * np.ones(160), 16000)
    if not any(a == "--prompt" for a in args) and "jazz" not in args:
        args = ["jazz", *args]
    line = one_error_line(run("generate", *args, "-m", mono_ckpt[0], "--quiet", cwd=tmp_path))
    assert message in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.wav", "notes.txt", "short.wav", "silence.wav"]


@pytest.mark.slow
def test_schedule_continuation_and_finishing_from_the_cli(mono_ckpt, tmp_path):
    riff = tmp_path / "riff.wav"
    sf.write(str(riff), 0.3 * __import__("numpy").sin(__import__("numpy").arange(16000) / 10), 32000)
    proc = run("generate", "--prompt", "0:intro", "--prompt", "0.5:drums", "-d", "1.5", "--continue", riff,
               "--seed", "2", "-m", mono_ckpt[0], "--fade-out", "0.3", "--loudness", "-16", "-o",
               tmp_path / "out.mp3", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert sf.info(str(tmp_path / "out.mp3")).duration == pytest.approx(1.5, abs=0.06)
    loop = run("generate", "chiptune", "-d", "1", "--loop", "--seed", "1", "-m", mono_ckpt[0], "-o",
               tmp_path / "loop.wav", "--wav-format", "pcm24", "--quiet")
    assert loop.returncode == 0, loop.stderr
    info = sf.info(str(tmp_path / "loop.wav"))
    assert info.frames == 32000 and info.subtype == "PCM_24"


@pytest.mark.slow
def test_unquoted_words_are_one_prompt_and_text_adds_prompts(mono_ckpt, tmp_path):
    proc = run("generate", "calm", "lofi", "piano", "-m", mono_ckpt[0], "-d", "0.2", "--seed", "3", "--quiet",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calm-lofi-piano-3.wav"]
    line = one_error_line(run("generate", "calm lofi", "piano", "-m", mono_ckpt[0], cwd=tmp_path))
    assert "words without quotes form one prompt" in line and "--text" in line
    for empty in ("", "  "):
        assert "prompt is empty" in one_error_line(run("generate", empty, "-m", mono_ckpt[0], cwd=tmp_path))
    assert "give a PROMPT" in one_error_line(run("generate", "-m", mono_ckpt[0], cwd=tmp_path))


@pytest.mark.slow
def test_unicode_letters_stay_in_file_names(mono_ckpt, tmp_path):
    proc = run("generate", "café olé, Ωmega 7", "-m", mono_ckpt[0], "-d", "0.2", "--seed", "1", "--quiet",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["café-olé-ωmega-7-1.wav"]


@pytest.mark.parametrize("flag", [["--temperature", "-1"], ["--top-p", "2"], ["--cfg", "nan"], ["-d", "0.001"],
                                  ["--context", "0"], ["-n", "65"]])
def test_values_are_checked_before_the_model_loads(tmp_path, flag):
    """A broken checkpoint would fail the load: the value's own error must come first."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    line = one_error_line(run("generate", "jazz", "-m", broken, *flag, cwd=tmp_path))
    assert f"({flag[0]})" in line and "config.json" not in line


def _file_size_limit(limit):
    def apply():  # in the child: writes past `limit` bytes fail with EFBIG, as a full disk fails them
        import resource
        import signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
@pytest.mark.parametrize("name", ["keep.wav", "new.wav", "new.flac", "new.mp3"])
def test_a_failed_write_leaves_the_old_file_and_no_half_file(mono_ckpt, tmp_path, name):
    keep = tmp_path / "keep.wav"
    keep.write_bytes(os.urandom(50_000))
    before = keep.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "tunesmith", "generate", "jazz", "-m", str(mono_ckpt[0]), "-d", "8",
                           "-o", str(tmp_path / name), "--overwrite", "--quiet"], capture_output=True, text=True,
                          env=dict(os.environ, HF_HUB_OFFLINE="1"), preexec_fn=_file_size_limit(60_000), timeout=300)
    assert proc.returncode == 1 and proc.stderr.startswith(f"tunesmith: error: cannot write {tmp_path / name}: ")
    assert "File too large" in proc.stderr  # the OS's reason (for .mp3: writing its temporary source)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.wav"] and keep.read_bytes() == before


def test_ffmpeg_is_found_before_generating(mono_ckpt, tmp_path):
    env = {"TUNESMITH_FFMPEG": "system", "PATH": str(tmp_path)}  # no ffmpeg on this PATH
    line = one_error_line(run("generate", "jazz", "-m", mono_ckpt[0], "-o", tmp_path / "x.mp3", env=env))
    assert "no ffmpeg is on the PATH" in line and not list(tmp_path.iterdir())


@pytest.mark.slow
def test_wav_format_for_other_outputs_is_said(mono_ckpt, tmp_path):
    proc = run("generate", "jazz", "-m", mono_ckpt[0], "-d", "0.2", "--wav-format", "float", "-o",
               tmp_path / "x.m4a", "--quiet")
    assert proc.returncode == 0 and "--wav-format float applies to .wav (and .flac) files: .m4a" in proc.stderr


@pytest.mark.slow
def test_more_threads_than_cores_are_warned_about(mono_ckpt, tmp_path):
    proc = run("generate", "jazz", "-m", mono_ckpt[0], "-d", "0.2", "--threads", str(4 * os.cpu_count()), "-o",
               tmp_path / "x.wav", "--quiet")
    assert proc.returncode == 0 and "more threads than cores" in proc.stderr


def test_output_into_a_closed_pipe_ends_quietly():
    """`tunesmith models | head -1`: the reader leaves early; no error line, the shell's code for SIGPIPE."""
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith", "models"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    proc.stdout.close()  # before the child has started writing (its imports take far longer)
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert stderr == ""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["out.wav", "out.mp3"])
def test_a_full_disk_is_one_line(mono_ckpt, tmp_path, name):
    with small_disk(tmp_path / "disk", "1m") as disk:
        filler = fill(disk)
        proc = run("generate", "jazz", "-m", mono_ckpt[0], "-d", "2", "-o", disk / name, "--quiet")
        assert one_error_line(proc) == f"tunesmith: error: cannot write {disk / name}: no space left on the device"
        assert [p.name for p in disk.iterdir()] == ["filler"]
        filler.unlink()


@pytest.mark.slow
@needs_dev_full
def test_a_full_disk_is_one_line_without_a_tmpfs(mono_ckpt, tmp_path):
    full_partial(tmp_path / "out.wav")  # its writes land on /dev/full: ENOSPC
    proc = run("generate", "jazz", "-m", mono_ckpt[0], "-d", "0.5", "-o", tmp_path / "out.wav", "--quiet")
    assert one_error_line(proc) == f"tunesmith: error: cannot write {tmp_path / 'out.wav'}: no space left on the device"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag, limit", [("--continue", 3600), ("--melody", 3600), ("--style", 1200)])
def test_audio_inputs_past_their_length_are_refused_from_the_header(mono_ckpt, tmp_path, flag, limit):
    from tests.audio.long_files import claim_frames, silent_flac

    long = claim_frames(silent_flac(tmp_path / "long.flac", 2), 4000 * 16000)  # says 4000 s: nothing decoded
    line = one_error_line(run("generate", "jazz", flag, long, "-m", mono_ckpt[0], "--quiet", cwd=tmp_path))
    assert f"({flag}) {long} lasts 4000.0 s: more than the {limit} s allowed" in line


def test_a_full_disk_anywhere_is_one_line(monkeypatch, capsys):
    """ENOSPC from any write (not only audio files: a cache, a download) is one line, not an internal error."""
    import errno

    import tunesmith.cli as cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/somewhere/cache.bin")

    monkeypatch.setattr(cli, "cmd_models", full)
    assert cli.main(["models"]) == cli.EXIT_ERROR
    assert capsys.readouterr().err == "tunesmith: error: /somewhere/cache.bin: no space left on the device\n"
