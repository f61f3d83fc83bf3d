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
        return states, mask


def with_null_condition(states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Append the reference's null condition for classifier-free guidance: zero states, zero mask."""
    return torch.cat([states, torch.zeros_like(states)]), torch.cat([mask, torch.zeros_like(mask)])
