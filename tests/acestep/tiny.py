"""Tiny random ACE-Step 1.5 pipelines, built offline: a byte-level tokenizer made with `tokenizers`,
a tiny Qwen3 text encoder, condition encoder and DiT (about diffusers' own test sizes), and an
Oobleck VAE with the real layout (48 kHz stereo, 1920 samples per latent frame: 25 frames a second)."""

from __future__ import annotations

from pathlib import Path

import torch

LATENT_DIM = 8  # the real models: 64


def tiny_tokenizer():
    """Byte-level BPE without merges: every text maps to one token per byte, so any lyric counts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(byte_chars))}
    vocab["<|endoftext|>"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   model_max_length=4096)


def tiny_pipeline(seed: int = 0, turbo: bool = True):
    from diffusers import AceStepPipeline, AutoencoderOobleck, FlowMatchEulerDiscreteScheduler
    from diffusers.models.transformers.ace_step_transformer import AceStepTransformer1DModel
    from diffusers.pipelines.ace_step import AceStepConditionEncoder
    from transformers import Qwen3Config, Qwen3Model

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    transformer = AceStepTransformer1DModel(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, in_channels=3 * LATENT_DIM, audio_acoustic_hidden_dim=LATENT_DIM, patch_size=2,
        rope_theta=10000.0, sliding_window=16, is_turbo=turbo, model_version="turbo" if turbo else "base")
    torch.manual_seed(seed + 1)
    text_encoder = Qwen3Model(Qwen3Config(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, head_dim=4,
                                          vocab_size=len(tokenizer), max_position_embeddings=1024))
    torch.manual_seed(seed + 2)
    condition_encoder = AceStepConditionEncoder(
        hidden_size=32, intermediate_size=64, text_hidden_dim=16, timbre_hidden_dim=LATENT_DIM,
        num_lyric_encoder_hidden_layers=2, num_timbre_encoder_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, rope_theta=10000.0, sliding_window=16)
    with torch.no_grad():  # the converter stores VAE-encoded silence here; any fixed latent will do
        condition_encoder.silence_latent.copy_(0.1 * torch.randn(condition_encoder.silence_latent.shape))
    torch.manual_seed(seed + 3)
    # the encoder's output holds a mean and a scale per latent channel (the real models: 128 for 64)
    vae = AutoencoderOobleck(encoder_hidden_size=2 * LATENT_DIM, downsampling_ratios=[2, 4, 4, 6, 10], decoder_channels=2,
                             decoder_input_channels=LATENT_DIM, audio_channels=2, channel_multiples=[1, 1, 2, 2, 2],
                             sampling_rate=48000)
    with torch.no_grad():  # random biases would swamp the latents in so small a decoder: the song would not vary
        for name, p in vae.decoder.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0)
    return AceStepPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer,
                           condition_encoder=condition_encoder, scheduler=scheduler)


def save_tiny_pipeline(folder: Path, seed: int = 0, turbo: bool = True):
    """-> the pipeline, saved in the diffusers layout (model_index.json and one folder per part)."""
    pipe = tiny_pipeline(seed, turbo)
    pipe.save_pretrained(folder, safe_serialization=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe
