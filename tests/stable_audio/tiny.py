"""Tiny random Stable Audio Open checkpoints, built offline: a T5 with its own small tokenizer and a
diffusers StableAudioPipeline saved with save_pretrained (the 1.0 layout)."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = ("rain on a tin roof distant thunder tech house drum loop punchy kick warm ambient pad slow "
         "dusty vinyl hip hop beat music noise").split()
T5_DIM = 32
MAX_TOKENS = 16


def save_tiny_t5(folder: Path, seed: int = 0) -> Path:
    """A T5 encoder of width T5_DIM and a unigram tokenizer over WORDS, in the transformers layout."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"\u2581{w}", -1.0) for w in WORDS]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz\u2581"]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = T5TokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                model_max_length=MAX_TOKENS, extra_ids=0)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(vocab), d_model=T5_DIM, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, decoder_start_token_id=0)
    model = T5EncoderModel(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_pipeline(seed: int = 0, sample_size: int = 256):
    """A StableAudioPipeline with tiny random parts (about diffusers' own test sizes, a T5 of our own).
    The VAE makes 4 kHz stereo, 8 samples per latent frame: 256 frames last 0.512 s."""
    import tempfile

    from diffusers import (AutoencoderOobleck, CosineDPMSolverMultistepScheduler, StableAudioDiTModel,
                           StableAudioPipeline, StableAudioProjectionModel)
    from transformers import T5EncoderModel, T5TokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        save_tiny_t5(Path(tmp), seed)
        text_encoder = T5EncoderModel.from_pretrained(tmp)
        tokenizer = T5TokenizerFast.from_pretrained(tmp)
    torch.manual_seed(seed)
    transformer = StableAudioDiTModel(sample_size=sample_size, in_channels=3, num_layers=2, attention_head_dim=4,
                                      num_key_value_attention_heads=2, out_channels=3, cross_attention_dim=4,
                                      time_proj_dim=8, global_states_input_dim=8, cross_attention_input_dim=4,
                                      num_attention_heads=2)
    torch.manual_seed(seed + 1)
    vae = AutoencoderOobleck(encoder_hidden_size=6, downsampling_ratios=[2, 4], decoder_channels=3,
                             decoder_input_channels=3, audio_channels=2, channel_multiples=[2, 4], sampling_rate=4000)
    torch.manual_seed(seed + 2)
    projection = StableAudioProjectionModel(text_encoder_dim=T5_DIM, conditioning_dim=4, min_value=0, max_value=32)
    scheduler = CosineDPMSolverMultistepScheduler(solver_order=2, prediction_type="v_prediction", sigma_data=1.0,
                                                  sigma_schedule="exponential")
    return StableAudioPipeline(vae=vae, text_encoder=text_encoder, projection_model=projection, tokenizer=tokenizer,
                               transformer=transformer, scheduler=scheduler)


def save_tiny_pipeline(folder: Path, seed: int = 0, sample_size: int = 256):
    """-> the pipeline, saved in the diffusers layout (model_index.json and one folder per part)."""
    pipe = tiny_pipeline(seed, sample_size)
    pipe.save_pretrained(folder, safe_serialization=True)
    return pipe
