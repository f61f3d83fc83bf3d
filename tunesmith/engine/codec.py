"""EnCodec decode (transformers' EncodecModel): codes -> waveform."""

from __future__ import annotations

import torch


@torch.inference_mode()
def decode_codes(codec: torch.nn.Module, codes: torch.Tensor, audio_channels: int) -> torch.Tensor:
    """codes [B, K, N] -> audio [B, channels, N * hop] float32.

    Stereo checkpoints interleave codebooks (even: left, odd: right); each channel is decoded
    on its own, both in one batch.
    """
    B = codes.shape[0]
    if audio_channels == 2:
        codes = torch.cat([codes[:, 0::2], codes[:, 1::2]])  # [2B, K/2, N]: lefts then rights
    audio = codec.decode(codes[None], [None]).audio_values  # [B*, 1, samples]
    if audio_channels == 2:
        audio = torch.cat([audio[:B], audio[B:]], dim=1)
    return audio.float()
