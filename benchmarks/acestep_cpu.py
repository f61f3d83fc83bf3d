"""ACE-Step 1.5 on the CPU: tunesmith's AceStep beside diffusers' AceStepPipeline, on the same modules with
random weights at the 2B turbo's sizes (acestep-v15-turbo: a 24-layer DiT of width 2048, Qwen3-Embedding-0.6B's
sizes for the text encoder, the condition encoder, the 48 kHz Oobleck VAE), in one process, float32.

    python -m benchmarks.acestep_cpu                         # 30 s of song, 8 turbo steps, 1 run each
    python -m benchmarks.acestep_cpu --seconds 30 --runs 1 --markdown BENCHMARKS.md

Per stage (forward hooks on the shared modules, so both sides are timed alike): the text encoder, the
condition encoder (lyrics and timbre), the DiT's 8 steps, the VAE decode; end to end; peak resident memory
above the loaded weights (about 12 GB of float32 weights, built in memory, never written to disk). The
tokenizer is a byte-level BPE trained on the benchmark's own texts (the real Qwen3 tokenizer cannot be
downloaded here), so token counts are close to real ones. The XL models (4B DiT: 16 GB in float32 alone)
do not fit this machine's 24 GB beside everything else.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import numpy as np
import torch

from .bench import PeakMemory
from .common import hardware, report

PROMPT = "upbeat indie pop, female vocals, jangly guitars, bright drums, 120 bpm"
LYRICS = """[verse]
Morning comes through the window pane, coffee cold and the streets all rain
I keep your number on a folded page, singing softly to an empty stage
[chorus]
Oh we run, we run, through the city lights, every heartbeat burning bright tonight
Oh we run, we run, till the morning comes, singing louder than the drums
[verse]
Paper planes from the balcony, every one of them a melody"""
SIZES = {
    "turbo-2b": dict(
        transformer=dict(),  # AceStepTransformer1DModel's defaults are the 2B turbo's
        text_encoder=dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                          num_key_value_heads=8, head_dim=128, vocab_size=151669, max_position_embeddings=32768),
        condition_encoder=dict(),  # AceStepConditionEncoder's defaults likewise
        vae=dict(encoder_hidden_size=128, decoder_channels=128, channel_multiples=[1, 2, 4, 8, 16])),
    "tiny": dict(  # the tests' sizes: checks that the benchmark runs, no speed claims
        transformer=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, in_channels=24, audio_acoustic_hidden_dim=8,
                         sliding_window=16),
        text_encoder=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=4, vocab_size=2048, max_position_embeddings=1024),
        condition_encoder=dict(hidden_size=32, intermediate_size=64, text_hidden_dim=16, timbre_hidden_dim=8,
                               num_lyric_encoder_hidden_layers=2, num_timbre_encoder_hidden_layers=2,
                               num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=16),
        vae=dict(encoder_hidden_size=4, decoder_channels=2, channel_multiples=[1, 1, 2, 2, 2])),
}


def tokenizer_for(texts: list[str]):
    """A byte-level BPE trained on `texts` (about one token a word, as Qwen3's on English)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=2000, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|endoftext|>")


def _randomize(module: torch.nn.Module, seed: int):
    """Weights of sensible scale without torch's slow default initialisation: normal / sqrt(fan in) for
    matrices and kernels, ones for norm weights, small values elsewhere."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() >= 2:
                p.normal_(0, 1.0 / (p[0].numel() ** 0.5), generator=gen)
            elif "norm" in name and name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.normal_(0, 0.02, generator=gen)
        for name, b in module.named_buffers():
            if b.is_floating_point():
                b.normal_(0, 0.1, generator=gen)
    return module.eval()


def build(size: str):
    """-> (AceStepParts, AceStepPipeline) sharing every module, float32 on the CPU."""
    from diffusers import AceStepPipeline, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step import AceStepConditionEncoder
    from transformers import Qwen3Config, Qwen3Model

    from tunesmith.acestep.parts import TURBO_STEPS, AceStepConfig, AceStepParts
    from tunesmith.acestep.prompt import caption_text, lyrics_text

    s = SIZES[size]
    with torch.device("meta"):
        transformer = AceStepTransformer1DModel(**s["transformer"], is_turbo=True, model_version="turbo")
        text_encoder = Qwen3Model(Qwen3Config(**s["text_encoder"]))
        condition = AceStepConditionEncoder(**s["condition_encoder"])
        vae = AutoencoderOobleck(downsampling_ratios=[2, 4, 4, 6, 10], audio_channels=2, sampling_rate=48000,
                                 decoder_input_channels=transformer.config.audio_acoustic_hidden_dim, **s["vae"])
    for i, m in enumerate((transformer, text_encoder, condition, vae)):
        m.to_empty(device="cpu")
        _randomize(m, i)
    text_encoder.rotary_emb = type(text_encoder.rotary_emb)(config=text_encoder.config)  # its buffers, computed
    tokenizer = tokenizer_for([caption_text(PROMPT, 30), lyrics_text(LYRICS, "en")] * 4)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)
    config = AceStepConfig(sample_rate=48000, hop=1920, audio_channels=2,
                           latent_dim=transformer.config.audio_acoustic_hidden_dim, turbo=True, steps=TURBO_STEPS,
                           cfg=1.0)
    parts = AceStepParts(config, tokenizer, text_encoder, condition, transformer, vae, scheduler)
    pipe = AceStepPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
                           condition_encoder=condition, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return parts, pipe


class StageTimer:
    """Wall seconds spent in each module's forward (hooks), summed over a run."""

    def __init__(self, modules: dict[str, torch.nn.Module]):
        self.seconds = {name: 0.0 for name in modules}
        self._start = {}
        for name, module in modules.items():
            module.register_forward_pre_hook(lambda *_, n=name: self._start.__setitem__(n, time.perf_counter()))
            module.register_forward_hook(lambda *_, n=name: self._stop(n))

    def _stop(self, name: str):
        self.seconds[name] += time.perf_counter() - self._start.pop(name)

    def reset(self) -> dict[str, float]:
        out, self.seconds = self.seconds, {name: 0.0 for name in self.seconds}
        return out


def main(argv=None):
    from tunesmith.acestep.model import AceStep

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="turbo-2b", choices=list(SIZES))
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--bfloat16", action="store_true", help="also the CPU path (DiT bfloat16), last")
    parser.add_argument("--markdown", default=None, help="append the table to this file")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    parts, pipe = build(args.size)
    print(f"built in {time.perf_counter() - started:.0f} s", flush=True)
    model = AceStep(parts, f"random {args.size}", torch.device("cpu"), torch.float32)
    timer = StageTimer({"text encoder": parts.text_encoder, "condition encoder": parts.condition_encoder,
                        "DiT": parts.transformer, "VAE decode": parts.vae.decoder})
    sides = {
        "tunesmith (AceStep.generate)": lambda: model.generate(PROMPT, lyrics=LYRICS, duration=args.seconds,
                                                                seed=0)[0].audio,
        "diffusers (AceStepPipeline)": lambda: pipe(PROMPT, lyrics=LYRICS, audio_duration=args.seconds,
                                                    num_inference_steps=8,
                                                    generator=torch.Generator().manual_seed(0)).audios[0].numpy(),
    }
    with torch.inference_mode():  # warm-up: oneDNN's primitives, first-touch pages
        model.generate(PROMPT, lyrics=LYRICS, duration=10, seed=0, steps=1)
        pipe(PROMPT, lyrics=LYRICS, audio_duration=10, num_inference_steps=1)
    results = {name: [] for name in sides}
    audio = {}
    for _ in range(args.runs):
        for name, run in sides.items():
            timer.reset()
            with torch.inference_mode(), PeakMemory(torch.device("cpu")) as peak:
                start = time.perf_counter()
                audio[name] = run()
                total = time.perf_counter() - start
            results[name].append((total, timer.reset(), peak.extra_mb))
            print(name, f"{total:.1f} s", flush=True)
    ours, theirs = audio.values()
    diff = float(np.abs(ours - theirs[:, :ours.shape[1]]).max())
    if args.bfloat16:  # last: the DiT is converted in place (the pipeline shares it)
        from tunesmith.acestep.model import for_cpu

        fast = AceStep(for_cpu(parts), f"random {args.size}", torch.device("cpu"), torch.bfloat16)
        name = "tunesmith, CPU path (DiT bfloat16, CPU decoder)"
        results[name] = []
        with torch.inference_mode():
            fast.generate(PROMPT, lyrics=LYRICS, duration=10, seed=0, steps=1)
        for _ in range(args.runs):
            timer.reset()
            with torch.inference_mode(), PeakMemory(torch.device("cpu")) as peak:
                start = time.perf_counter()
                clip = fast.generate(PROMPT, lyrics=LYRICS, duration=args.seconds, seed=0)[0]
                total = time.perf_counter() - start
            audio[name] = clip.audio
            stage = timer.reset()
            stage["VAE decode"] = clip.timings["vae"]  # the CPU decoder is no module: no hook sees it
            results[name].append((total, stage, peak.extra_mb))
            print(name, f"{total:.1f} s", flush=True)
    snr = {}
    for name, a in audio.items():
        error = float(((ours - a[:, :ours.shape[1]]).astype(np.float64) ** 2).sum())
        if a is not ours:
            snr[name] = "exact" if error == 0 else f"{10 * np.log10((ours.astype(np.float64) ** 2).sum() / error):.1f}"
    date = datetime.date.today().isoformat()
    lines = [f"### ACE-Step 1.5 turbo ({args.size}), {args.seconds:g} s of song, 8 steps, float32 ({date})", "",
             f"Hardware: {hardware()}. Command: `python -m benchmarks.acestep_cpu --size {args.size} --seconds "
             f"{args.seconds:g} --runs {args.runs}{' --bfloat16' if args.bfloat16 else ''}`. Median of {args.runs} run(s), random weights; both sides run "
             f"the same modules. Largest difference between the two songs: {diff:.1e}.", "",
             "| | text encoder (s) | condition encoder (s) | DiT, 8 steps (s) | VAE decode (s) | end to end (s) | "
             "real-time factor | peak extra MB | SNR vs tunesmith float32 (dB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, runs in results.items():
        total = statistics.median(r[0] for r in runs)
        stage = {k: statistics.median(r[1][k] for r in runs) for k in runs[0][1]}
        peak = max(r[2] for r in runs)
        lines.append(f"| {name} | {stage['text encoder']:.2f} | {stage['condition encoder']:.2f} | "
                     f"{stage['DiT']:.2f} | {stage['VAE decode']:.2f} | {total:.2f} | {args.seconds / total:.2f}x | "
                     f"{peak:.0f} | {snr.get(name, '')} |")
    report("\n".join(lines) + "\n", args.markdown)


if __name__ == "__main__":
    main()
