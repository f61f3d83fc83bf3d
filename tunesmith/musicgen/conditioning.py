"""Text conditioning: tokenizer + T5 encoder (transformers' classes; they run once per call)."""

from __future__ import annotations

import torch


class TextConditioner:
    def __init__(self, tokenizer, encoder: torch.nn.Module):
        self.tokenizer = tokenizer
        self.encoder = encoder  # transformers T5EncoderModel, kept in float32

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @torch.inference_mode()
    def encode(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """prompts -> (states [B, S, text_dim] float32, mask [B, S] int64), padded like the reference."""
        tokens = self.tokenizer(prompts, padding=True, return_tensors="pt")
        ids = tokens["input_ids"].to(self.device)
        mask = tokens["attention_mask"].to(self.device)
        states = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        empty = torch.tensor([not p for p in prompts], device=self.device)
        return states, mask.masked_fill(empty[:, None], 0)  # no text (style models): masked whole, as the reference


def with_null_condition(states: torch.Tensor, mask: torch.Tensor, nulls: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Append the reference's null condition for classifier-free guidance, `nulls` times: zero states,
    zero mask (two for MusicGen-Style's double guidance, whose style-only rows have no text either)."""
    return (torch.cat([states] + [torch.zeros_like(states)] * nulls),
            torch.cat([mask] + [torch.zeros_like(mask)] * nulls))


CHROMA_N_FFT = 16384
CHROMA_HOP = 4096


def chroma_features(audio: torch.Tensor, sample_rate: int, n_chroma: int = 12) -> torch.Tensor:
    """Mono audio [samples] -> one-hot chroma [frames, n_chroma], as MusicgenMelodyFeatureExtractor:
    a centred, reflect-padded Hann STFT (n_fft 16384, hop 4096) power spectrum, librosa's chroma
    filter bank, and the strongest pitch class of each frame. Frames: 1 + samples // 4096."""
    from transformers.audio_utils import chroma_filter_bank

    if audio.shape[-1] < CHROMA_N_FFT:  # too short to reflect-pad: zero-pad both sides, as the reference
        pad = CHROMA_N_FFT - audio.shape[-1]
        audio = torch.nn.functional.pad(audio, (pad // 2, pad - pad // 2))
    window = torch.hann_window(CHROMA_N_FFT, device=audio.device)
    stft = torch.stft(audio.float(), CHROMA_N_FFT, CHROMA_HOP, window=window, center=True, pad_mode="reflect",
                      return_complex=True)
    power = stft.abs() ** 2 / window.pow(2).sum()  # [bins, frames], "window"-normalised as torchaudio
    filters = torch.from_numpy(chroma_filter_bank(sampling_rate=sample_rate, num_frequency_bins=CHROMA_N_FFT,
                                                  tuning=0, num_chroma=n_chroma)).float().to(audio.device)
    raw = filters @ power  # [n_chroma, frames]
    norm = raw / raw.abs().amax(dim=0, keepdim=True).clamp_min(1e-6)
    return torch.nn.functional.one_hot(norm.argmax(dim=0), n_chroma).float()  # [frames, n_chroma]
