"""Tiny random MusicGen checkpoints in the transformers layout, built with transformers itself."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("calm lofi piano with vinyl crackle deep house a hypnotic bassline bossa nova guitar drums synth "
         "rock jazz ambient pads slow fast").split()


def tiny_config(stereo: bool = False, proj: bool = True):
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    text = T5Config(vocab_size=len(WORDS) + 64, d_model=24 if proj else 32, d_kv=8, d_ff=32, num_layers=2,
                    num_heads=3, relative_attention_num_buckets=8)
    channels = 2 if stereo else 1
    # Hop 640 at 32 kHz: 50 frames a second, as the real EnCodec 32 kHz; 4 codebooks of 6 bits at 50 Hz
    # are 1.2 kbps (the real one: 4 of 11 bits, 2.2 kbps).
    codec = EncodecConfig(hidden_size=16, num_filters=4, codebook_size=64, codebook_dim=16,
                          upsampling_ratios=[8, 5, 4, 4], sampling_rate=32000, audio_channels=1,
                          num_residual_layers=1, target_bandwidths=[1.2], chunk_length_s=None, overlap=None,
                          normalize=False, use_causal_conv=False, num_lstm_layers=1)
    decoder = MusicgenDecoderConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    ffn_dim=64, num_codebooks=4 * channels, audio_channels=channels,
                                    pad_token_id=64, bos_token_id=64, max_position_embeddings=2048)
    return MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=codec.to_dict(), decoder=decoder.to_dict())


def tiny_melody_config(stereo: bool = False):
    """A musicgen-melody layout: decoder without cross-attention, chroma and text as its prefix."""
    from transformers import MusicgenMelodyConfig, MusicgenMelodyDecoderConfig

    base = tiny_config(stereo)
    decoder = MusicgenMelodyDecoderConfig(**{k: v for k, v in base.decoder.to_dict().items()
                                             if k not in ("model_type", "add_cross_attention",
                                                          "cross_attention_hidden_size")})
    return MusicgenMelodyConfig(text_encoder=base.text_encoder.to_dict(), audio_encoder=base.audio_encoder.to_dict(),
                                decoder=decoder.to_dict(), num_chroma=12, chroma_length=20)


# Real architecture sizes, for benchmarks with random weights (speed does not depend on weight values).
DECODER_PRESETS = {
    "small": dict(dim=1024, n_layers=24, n_heads=16, ffn_dim=4096),
    "medium": dict(dim=1536, n_layers=48, n_heads=24, ffn_dim=6144),
    "large": dict(dim=2048, n_layers=48, n_heads=32, ffn_dim=8192),
}


def real_size_config(size: str, stereo: bool = False):
    """The architecture of facebook/musicgen-{size} (T5-base, EnCodec 32 kHz), for benchmarks."""
    from transformers import EncodecConfig, MusicgenConfig, MusicgenDecoderConfig, T5Config

    p = DECODER_PRESETS[size]
    channels = 2 if stereo else 1
    text = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12)
    codec = EncodecConfig(hidden_size=128, num_filters=64, codebook_size=2048, upsampling_ratios=[8, 5, 4, 4],
                          sampling_rate=32000, audio_channels=1, target_bandwidths=[2.2], chunk_length_s=None,
                          overlap=None, normalize=False, use_causal_conv=False, num_lstm_layers=2,
                          use_conv_shortcut=False)
    decoder = MusicgenDecoderConfig(vocab_size=2048, hidden_size=p["dim"], num_hidden_layers=p["n_layers"],
                                    num_attention_heads=p["n_heads"], ffn_dim=p["ffn_dim"],
                                    num_codebooks=4 * channels, audio_channels=channels)
    return MusicgenConfig(text_encoder=text.to_dict(), audio_encoder=codec.to_dict(), decoder=decoder.to_dict())


def save_tokenizer(folder: Path):
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [("▁" + w, -1.0) for w in WORDS]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789,.-"]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(str(folder))


def build_reference(stereo: bool = False, proj: bool = True, seed: int = 0, size: str | None = None,
                    melody: bool = False):
    """A random MusicgenForConditionalGeneration whose EnCodec codebooks are random too
    (transformers initialises them to zero, which would make every code decode alike).
    `size` (small, medium, large) gives the real architecture instead of the tiny one."""
    from transformers import MusicgenForConditionalGeneration, MusicgenMelodyForConditionalGeneration

    torch.manual_seed(seed)
    if melody:
        model = MusicgenMelodyForConditionalGeneration(tiny_melody_config(stereo)).eval()
    else:
        config = real_size_config(size, stereo) if size else tiny_config(stereo, proj)
        model = MusicgenForConditionalGeneration(config).eval()
    with torch.no_grad():
        for layer in model.audio_encoder.quantizer.layers:
            layer.codebook.embed.normal_(0, 1)
        if size is None:
            # Larger decoder weights give peaked, prompt-dependent distributions: greedy parity is a real test.
            for name, p in model.decoder.named_parameters():
                if p.dim() == 2 and "embed" not in name:
                    p.normal_(0, 0.3)
    return model


def save_checkpoint(folder: Path, stereo: bool = False, proj: bool = True, safe: bool = True,
                    shard: str | None = None, seed: int = 0, size: str | None = None, melody: bool = False):
    """Save like the hub's checkpoints: model.safetensors, or pytorch_model.bin when not `safe`,
    sharded with an index when `shard` gives a maximum shard size."""
    import json

    from safetensors.torch import load_file

    model = build_reference(stereo, proj, seed, size, melody)
    model.save_pretrained(str(folder), **({"max_shard_size": shard} if shard else {}))
    if not safe:
        for path in sorted(folder.glob("model*.safetensors")):
            torch.save(load_file(str(path)), folder / path.name.replace("model", "pytorch_model").replace(
                ".safetensors", ".bin"))
            path.unlink()
        index = folder / "model.safetensors.index.json"
        if index.exists():
            data = json.loads(index.read_text())
            data["weight_map"] = {k: v.replace("model", "pytorch_model").replace(".safetensors", ".bin")
                                  for k, v in data["weight_map"].items()}
            (folder / "pytorch_model.bin.index.json").write_text(json.dumps(data))
            index.unlink()
    save_tokenizer(folder)
    return model


def reference_generate(ref, tokens, max_new_tokens: int, **kwargs):
    """transformers' greedy generation with guidance 3 -> (codes [B, K, N], audio [B, C, S]); the codes
    are caught on their way into EnCodec (stereo decodes left and right apart: re-interleaved here)."""
    captured = []
    decode = ref.audio_encoder.decode

    def capture(codes, *args, **kw):
        captured.append(codes[0].clone())
        return decode(codes, *args, **kw)

    ref.audio_encoder.decode = capture
    try:
        with torch.no_grad():
            audio = ref.generate(**tokens, **kwargs, do_sample=False, guidance_scale=3.0,
                                 max_new_tokens=max_new_tokens)
    finally:
        ref.audio_encoder.decode = decode
    codes = torch.stack(captured, dim=2).flatten(1, 2) if len(captured) == 2 else captured[0]
    return codes, audio
