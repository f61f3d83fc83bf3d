"""`tunesmith score` end to end on short videos made here with ffmpeg."""

import subprocess
import sys

import numpy as np
import pytest

from tunesmith.audio.finishing import integrated_loudness, true_peak_dbtp
from tunesmith.audio.io import read_audio, write_audio
from tunesmith.audio.ffmpeg import ffmpeg_exe
from tunesmith.video.probe import probe, stream_packets

from ..test_cli import one_error_line, run


def make_video(path, seconds=3.0, audio=True, rate=15, sound="sine=frequency=300"):
    args = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
            f"testsrc=size=96x64:rate={rate}:duration={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"{sound}:sample_rate=48000:duration={seconds}", "-c:a", "aac"]
    args += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-g", "5", "file:" + str(path)]
    subprocess.run(args, check=True)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return {
        "reel": make_video(folder / "reel.mp4", 3.0),
        "silent": make_video(folder / "silent.mp4", 2.0, audio=False, rate=24),
        "dash": make_video(folder / "-odd name: 1.mov", 2.0),
    }


def music_track(path, seconds, sample_rate=44100):
    """A chord with a swell and a sharp click every half second: peaks that test the limiter and the
    lossy encoder's overshoot."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    x = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) * (0.7 + 0.3 * np.sin(2 * np.pi * t))
    x[(t * 2 % 1) < 0.0005] += 0.9
    return write_audio(path, np.stack([x, x]).astype(np.float32), sample_rate)


def audio_of(path):
    """The output's audio stream, decoded (to check loudness, peak and fade)."""
    return read_audio(path)


def test_score_with_a_track_keeps_the_picture_and_fits_the_audio(clips, tmp_path):
    track = music_track(tmp_path / "track.flac", 10.0)
    out = tmp_path / "scored.mp4"
    proc = run("score", clips["reel"], "--audio", track, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    assert "finishing" in proc.stderr and "mux" in proc.stderr  # the timing table

    before, after = probe(clips["reel"]), probe(out)
    assert before.video.packets == after.video.packets  # the video packets, hash by hash
    audio_packets = stream_packets(out, "a:0", "test")
    assert abs(audio_packets.duration - after.duration) <= 1024 / 48000 + 1e-3
    audio, rate = audio_of(out)
    assert rate == 48000
    assert abs(integrated_loudness(audio, rate) + 14) < 1.0
    assert true_peak_dbtp(audio, rate) <= -1.0
    # the default 1 s fade out: the last 50 ms are far quieter than the middle
    tail, middle = audio[:, -rate // 20:], audio[:, rate:2 * rate]
    assert np.sqrt(np.mean(tail**2)) < 0.1 * np.sqrt(np.mean(middle**2))


@pytest.mark.slow
def test_score_generates_with_the_model(clips, mono_ckpt, tmp_path):
    out = tmp_path / "generated.mp4"
    proc = run("score", clips["silent"], "ambient pads", "-m", mono_ckpt[0], "--seed", "3", "-o", out,
               "--fade-in", "0.2", "--quiet", subprocess=True)  # one score end to end, as users run it
    assert proc.returncode == 0, proc.stderr
    assert probe(out).video.packets == probe(clips["silent"]).video.packets
    assert abs(stream_packets(out, "a:0", "test").duration - 2.0) <= 1024 / 48000 + 1e-3
    assert "seed 3" in proc.stderr and "generation" in proc.stderr
    # The random model's sound lies partly above what AAC keeps: measured after encoding, corrected.
    audio, rate = audio_of(out)
    assert abs(integrated_loudness(audio, rate) + 14) < 1.0 and true_peak_dbtp(audio, rate) <= -0.9


def test_several_videos_and_odd_names(clips, tmp_path):
    track = music_track(tmp_path / "track.wav", 5.0)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = run("score", clips["reel"], clips["dash"], "--audio", track, "-o", out_dir)
    assert proc.returncode == 0, proc.stderr
    written = sorted(p.name for p in out_dir.iterdir())
    assert written == ["-odd name: 1-scored.mov", "reel-scored.mp4"]
    dashed = out_dir / "-odd name: 1-scored.mov"
    assert probe(dashed).video.packets == probe(clips["dash"]).video.packets


@pytest.mark.parametrize("mode", ["under", "over"])
def test_keep_the_original_audio_mixed(clips, tmp_path, mode):
    track = music_track(tmp_path / "track.wav", 5.0)
    out = tmp_path / f"{mode}.mp4"
    assert run("score", clips["reel"], "--audio", track, "-o", out, "--original", mode).returncode == 0
    audio, rate = audio_of(out)
    spectrum = np.abs(np.fft.rfft(audio[0, rate // 2:rate // 2 + rate]))  # 1 Hz bins
    original, music = spectrum[295:305].max(), spectrum[215:225].max()
    assert (original < music) if mode == "under" else (original > music)


def test_a_dc_offset_is_reported_removed_and_the_encoded_track_meets_the_target(clips, tmp_path):
    """A quiet track on a 0.17 DC offset (as a random-weight checkpoint makes): normalising it without
    removing the DC first left the limiter crushing the offset, and the encoder moved it further."""
    seconds, rate = 4.0, 32000
    t = np.arange(int(seconds * rate)) / rate
    quiet = sum(0.01 * np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6, 7000.0)) + 0.17
    track = write_audio(tmp_path / "dc.wav", quiet[None].astype(np.float32), rate, "float")
    out = tmp_path / "dc.mp4"
    proc = run("score", clips["reel"], "--audio", track, "-o", out, "--loudness", "-14")
    assert proc.returncode == 0, proc.stderr
    assert f"{track} failed the output check: DC offset 0.17: it is scored as given" in proc.stderr
    audio, rate = audio_of(out)
    assert abs(integrated_loudness(audio, rate) + 14) < 1.0
    assert abs(float(audio.mean())) < 0.01 and true_peak_dbtp(audio, rate) <= -0.9


def test_an_encoded_track_still_off_its_target_is_said(clips, tmp_path, monkeypatch, caplog):
    from tunesmith.video import score

    measured = []
    monkeypatch.setattr(score, "_loudness", lambda audio, rate: measured.append(1) or -20.0)  # deaf to gain
    job, = score.plan_jobs([str(clips["silent"])], str(tmp_path / "off.mp4"), False)
    t = np.arange(2 * 48000) / 48000
    track = (0.1 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32)
    with caplog.at_level("WARNING", logger="tunesmith"):
        score.mux(job, track, 48000, ceiling_dbtp=-1.0, loudness_lufs=-14.0)
    assert len(measured) == score.ENCODES  # measured after each encoding, corrected between them
    assert "measures -20.0 LUFS, off the -14 LUFS target by 6.0 LU" in caplog.text
    assert (tmp_path / "off.mp4").exists()


@pytest.mark.parametrize("mode, gain", [("over", "-6"), ("under", "0")])
def test_a_mix_keeps_the_ceiling(tmp_path, mode, gain):
    noisy = make_video(tmp_path / "noisy.mp4", 3.0, sound="anoisesrc=amplitude=0.7")  # a loud original
    track = music_track(tmp_path / "track.wav", 5.0)
    out = tmp_path / "mixed.mp4"
    proc = run("score", noisy, "--audio", track, "-o", out, "--original", mode, "--original-gain", gain)
    assert proc.returncode == 0, proc.stderr
    audio, rate = audio_of(out)
    assert true_peak_dbtp(audio, rate) <= -1.0 + 0.1


def test_the_original_gain_is_checked_before_the_model_loads(clips, tmp_path):
    for gain in ("12", "nan", "-61"):  # refused before the (missing) model would load
        line = one_error_line(run("score", clips["reel"], "pads", "-m", tmp_path / "no-model", "-o",
                                  tmp_path / "x.mp4", "--original", "over", "--original-gain", gain))
        assert "--original-gain must be from -60 to 0 dB" in line, line


@pytest.mark.parametrize("flag", [["--temperature", "-1"], ["--top-k", "-2"], ["--cfg", "nan"], ["--seed", "-3"]])
def test_sampling_values_are_checked_before_the_model_loads(clips, tmp_path, flag):
    line = one_error_line(run("score", clips["reel"], "pads", "-m", tmp_path / "no-model", "-o", tmp_path / "x.mp4",
                              *flag))
    assert f"({flag[0]})" in line and "no-model" not in line and not (tmp_path / "x.mp4").exists()


def test_a_video_under_a_second_gets_fades_that_fit(tmp_path):
    short = make_video(tmp_path / "short.mp4", 0.5)
    track = music_track(tmp_path / "track.wav", 2.0)
    out = tmp_path / "short-scored.mp4"
    proc = run("score", short, "--audio", track, "-o", out)
    assert proc.returncode == 0, proc.stderr
    audio, rate = audio_of(out)
    assert abs(integrated_loudness(audio, rate) + 14) < 1.0
    tail, middle = audio[:, -rate // 100:], audio[:, rate // 10:rate // 4]  # faded over the last 1/8 s
    assert np.sqrt(np.mean(tail**2)) < 0.2 * np.sqrt(np.mean(middle**2))
    line = one_error_line(run("score", short, "--audio", track, "-o", tmp_path / "x.mp4", "--fade-out", "1"))
    assert "longer than the audio" in line  # a fade asked for is never shortened
    tiny = make_video(tmp_path / "tiny.mp4", 0.3)  # too short for a loudness measure: peaks only
    assert run("score", tiny, "--audio", track, "-o", tmp_path / "tiny-scored.mp4").returncode == 0


def test_bad_inputs_are_refused_and_nothing_is_overwritten(clips, tmp_path):
    track = music_track(tmp_path / "track.wav", 5.0)
    (tmp_path / "notes.txt").write_text("hello")
    audio_only = write_audio(tmp_path / "song.m4a", read_audio(track)[0], 44100)
    existing = tmp_path / "existing.mp4"
    existing.write_bytes(b"precious")
    cases = [
        ((tmp_path / "missing.mp4", "--audio", track), "does not exist"),
        ((tmp_path / "notes.txt", "--audio", track), "not a video"),
        ((audio_only, "--audio", track), "no video stream"),
        ((clips["reel"], "--audio", track, "-o", clips["reel"]), "is the input video"),
        ((clips["reel"], "--audio", track, "-o", existing), "exists"),
        ((clips["reel"], "--audio", track, "-o", tmp_path / "x.avi"), "unsupported video container"),
        ((clips["reel"],), "prompt"),
        ((clips["reel"], clips["silent"]), "must be the prompt"),
        ((clips["reel"], "--audio", tmp_path / "notes.txt"), "not an audio file"),
        ((clips["reel"], "--audio", track, "--fade-out", "9"), "longer than the audio"),
    ]
    for args, message in cases:
        line = one_error_line(run("score", *args))
        assert message in line, (args, line)
    assert existing.read_bytes() == b"precious"
    assert not list(tmp_path.glob("*-scored*")) and not list(tmp_path.glob(".*partial*"))


def test_an_output_name_without_an_extension_takes_the_videos_as_generate_takes_wav(clips, tmp_path):
    """`score reel.mp4 ... -o scored`: a file scored.mp4 (the video's container), as `generate -o song` writes
    song.wav; a folder is `-o scored/`. An existing folder of that name stays a folder."""
    from tunesmith.cli.outputs import plan_outputs

    track = music_track(tmp_path / "track.wav", 4.0)
    proc = run("score", clips["reel"], "--audio", track, "-o", "scored", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "scored.mp4" and probe(tmp_path / "scored.mp4").video is not None
    assert not (tmp_path / "scored").exists()
    line = one_error_line(run("score", clips["reel"], "--audio", track, "-o", "scored", cwd=tmp_path))
    assert "scored.mp4 exists: choose another output or pass --overwrite" in line
    (tmp_path / "folder").mkdir()
    proc = run("score", clips["dash"], "--audio", track, "-o", "folder", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "folder" / "-odd name: 1-scored.mov").is_file()

    assert plan_outputs(str(tmp_path / "song"), [("jazz", 1)], False) == [tmp_path / "song.wav"]
    assert plan_outputs(str(tmp_path / "song"), [("jazz", 1), ("jazz", 2)], False) == [
        tmp_path / "song-1.wav", tmp_path / "song-2.wav"]
    assert plan_outputs(str(tmp_path / "folder"), [("jazz", 1)], False) == [tmp_path / "folder" / "jazz-1.wav"]


def test_the_system_ffmpeg_can_be_chosen(monkeypatch):
    monkeypatch.setenv("TUNESMITH_FFMPEG", sys.executable)  # a file that exists: taken as given
    assert ffmpeg_exe() == sys.executable
    monkeypatch.setenv("TUNESMITH_FFMPEG", "/nonexistent/ffmpeg")
    with pytest.raises(Exception, match="not a file"):
        ffmpeg_exe()


def test_a_video_stream_without_packets_is_zero_length(clips, monkeypatch):
    """ffmpeg will not write a video stream with no frames, so the packet list is emptied instead."""
    from tunesmith.errors import TunesmithError
    from tunesmith.video import probe as probing

    monkeypatch.setattr(probing, "stream_packets", lambda *a: probing.StreamPackets(probing.Fraction(1, 90000)))
    with pytest.raises(TunesmithError, match="zero length"):
        probe(clips["reel"])


@pytest.mark.slow
def test_a_video_longer_than_the_window_gets_a_long_form_track(mono_ckpt, tmp_path):
    video = make_video(tmp_path / "long.mp4", 33.0, audio=False, rate=5)
    out = tmp_path / "long-scored.mp4"
    proc = run("score", video, "slow ambient pads", "-m", mono_ckpt[0], "--seed", "1", "-o", out, "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert probe(out).video.packets == probe(video).video.packets
    assert abs(stream_packets(out, "a:0", "test").duration - probe(video).duration) <= 1024 / 48000 + 1e-3
