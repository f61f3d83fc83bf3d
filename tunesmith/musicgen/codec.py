"""EnCodec (transformers' EncodecModel): waveform <-> codes."""

from __future__ import annotations

import torch

DECODE_CHUNK_FRAMES = 1500  # 30 s at 50 Hz: long pieces decode in overlapping chunks of this size
DECODE_OVERLAP_FRAMES = 50  # 1 s of overlap, crossfaded, so chunk edges leave no seam


@torch.inference_mode()
def encode_audio(codec: torch.nn.Module, audio: torch.Tensor, audio_channels: int) -> torch.Tensor:
    """audio [channels, samples] at the codec's rate and the model's channels -> codes [1, K, frames].

    Stereo checkpoints interleave codebooks (even: left, odd: right), each channel encoded on its own.
    """
    bandwidth = codec.config.target_bandwidths[0]
    codes = codec.encode(audio[:, None, :].float(), bandwidth=bandwidth).audio_codes
    codes = codes.reshape(audio.shape[0], -1, codes.shape[-1])  # [channels, K', frames]
    if audio_channels == 2:
        codes = torch.stack([codes[0], codes[1]], dim=1).flatten(0, 1)  # [2K', frames], interleaved
    return codes.reshape(1, -1, codes.shape[-1])


@torch.inference_mode()
def _decode(codec: torch.nn.Module, codes: torch.Tensor, audio_channels: int) -> torch.Tensor:
    B = codes.shape[0]
    if audio_channels == 2:
        codes = torch.cat([codes[:, 0::2], codes[:, 1::2]])  # [2B, K/2, N]: lefts then rights
    audio = codec.decode(codes[None], [None]).audio_values  # [B*, 1, samples]
    if audio_channels == 2:
        audio = torch.cat([audio[:B], audio[B:]], dim=1)
    return audio.float()


@torch.inference_mode()
def decode_codes(codec: torch.nn.Module, codes: torch.Tensor, audio_channels: int,
                 chunk: int = DECODE_CHUNK_FRAMES, overlap: int = DECODE_OVERLAP_FRAMES) -> torch.Tensor:
    """codes [B, K, N] -> audio [B, channels, N * hop] float32.

    Up to `chunk` frames decode at once; longer pieces decode in chunks that overlap by `overlap`
    frames, crossfaded linearly, so memory stays bounded whatever the length.
    """
    N = codes.shape[-1]
    if N <= chunk:
        return _decode(codec, codes, audio_channels)
    hop = None
    out = None
    start = 0
    while start < N:
        end = min(start + chunk, N)
        piece = _decode(codec, codes[:, :, start:end], audio_channels)  # [B, C, (end - start) * hop]
        if out is None:
            hop = piece.shape[-1] // (end - start)
            out = piece.new_zeros(piece.shape[0], piece.shape[1], N * hop)
            out[:, :, : piece.shape[-1]] = piece
        else:
            fade = overlap * hop
            ramp = torch.linspace(0, 1, fade + 2, device=piece.device)[1:-1]  # excludes the pure ends
            a = start * hop
            out[:, :, a : a + fade] = out[:, :, a : a + fade] * (1 - ramp) + piece[:, :, :fade] * ramp
            out[:, :, a + fade : end * hop] = piece[:, :, fade:]
        if end == N:
            break
        start = end - overlap
    return out
