"""Tiny random Stable Audio 3 pipelines, built offline: a word-level tokenizer, a tiny T5Gemma encoder,
duration embedder and DiT, and a tiny SAME autoencoder (diffusers' band-attention one), at 4096 Hz with
32 samples per latent (128 latents a second), so that a quarter of a second is 32 latents."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "calm", "piano", "loud", "drums", "rain", "on", "a", "tin",
         "roof", "warm", "pad", "bright", "synth"]
LATENT_DIM = 8  # the real models: 256
TEXT_DIM = 16  # the real T5Gemma: 768
SAMPLE_RATE = 4096


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                                   unk_token="<unk>", model_max_length=256)


def tiny_pipeline(seed: int = 0, differential: bool = False, post_trained: bool = True):
    """differential: Medium's differential attention (Small has plain attention). post_trained: ping-pong
    sampling (stochastic_sampling), else Euler as the base checkpoints."""
    from diffusers import AutoencoderSAME, FlowMatchEulerDiscreteScheduler, StableAudio3DiTModel, StableAudio3Pipeline
    from diffusers.pipelines.stable_audio_3.modeling_stable_audio_3 import StableAudio3DurationEmbedder
    from transformers import T5GemmaConfig, T5GemmaEncoderModel
    from transformers.models.t5gemma.configuration_t5gemma import T5GemmaModuleConfig

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    module = T5GemmaModuleConfig(hidden_size=TEXT_DIM, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 num_key_value_heads=1, head_dim=8, vocab_size=len(WORDS), sliding_window=8)
    text_encoder = T5GemmaEncoderModel(T5GemmaConfig(encoder=module.to_dict(), decoder=module.to_dict(),
                                                     vocab_size=len(WORDS), is_encoder_decoder=False))
    transformer = StableAudio3DiTModel(io_channels=LATENT_DIM, embed_dim=32, depth=2, num_heads=2,
                                       cond_token_dim=TEXT_DIM, global_cond_dim=TEXT_DIM,
                                       local_add_cond_dim=1 + LATENT_DIM, timestep_features_dim=16, ff_mult=2,
                                       num_memory_tokens=4, use_differential_attention=differential)
    vae = AutoencoderSAME(audio_channels=2, patch_size=8, encoder_channels=8, encoder_c_mults=(2,),
                          encoder_strides=(4,), encoder_transformer_depths=(2,), latent_dim=LATENT_DIM, dim_heads=8,
                          ff_mult=2, sampling_rate=SAMPLE_RATE)
    seconds = StableAudio3DurationEmbedder(output_dim=TEXT_DIM, fourier_dim=16)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        # zero-initialised parts (the residual convs, repaint's local embedding, the autoencoder's output
        # projections, the padding embedding) would hide whole paths from the comparison: make them random
        for model in (transformer, vae):
            for _, p in model.named_parameters():
                if not p.any():
                    p.copy_(0.2 * torch.randn(p.shape, generator=generator))
        # so small a DiT barely hears its context: louder cross-attention makes the text move the audio
        for block in transformer.transformer_blocks:
            block.cross_attn.to_out.weight.mul_(32.0)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, shift=1.0, stochastic_sampling=post_trained)
    pipe = StableAudio3Pipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, duration_embedder=seconds,
                                transformer=transformer, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_pipeline(folder: Path, **kwargs):
    """-> the pipeline, saved in the diffusers layout (model_index.json and one folder per part)."""
    pipe = tiny_pipeline(**kwargs)
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe
