"""Model configuration as plain dataclasses, built from a checkpoint's config.json."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import CheckpointError


@dataclass
class DecoderConfig:
    """The MusicGen decoder LM. Field names follow the paper, not transformers."""

    dim: int = 1024
    n_layers: int = 24
    n_heads: int = 16
    ffn_dim: int = 4096
    n_codebooks: int = 4
    vocab_size: int = 2048  # codes per codebook; the embedding has one more row for the pad/BOS token
    audio_channels: int = 1
    max_positions: int = 2048
    text_dim: int = 768  # hidden size of the text encoder feeding cross-attention
    text_proj: bool = True  # enc_to_dec_proj present (text_dim != dim)
    pad_token: int = 2048
    # Melody checkpoints: no cross-attention; text and chroma states are a prefix of the decoder input.
    melody: bool = False
    chroma_dim: int = 12
    chroma_length: int = 235  # chroma frames in the prefix (30 s at 32 kHz / 4096)
    chroma_proj: bool = True  # audio_enc_to_dec_proj present (chroma_dim != dim)
    # MusicGen-Style checkpoints (audiocraft's layout): no cross-attention either; the prefix is
    # [style tokens; text states], the style tokens already in the decoder's width.
    style: bool = False
    head_dim: int = field(init=False)

    def __post_init__(self):
        if self.dim % self.n_heads:
            raise CheckpointError(f"decoder hidden size {self.dim} is not divisible by {self.n_heads} heads")
        if self.audio_channels not in (1, 2):
            raise CheckpointError(f"decoder has {self.audio_channels} audio channels; MusicGen has 1 or 2")
        if self.n_codebooks % self.audio_channels:
            raise CheckpointError(f"{self.n_codebooks} codebooks cannot be split over {self.audio_channels} channels")
        self.head_dim = self.dim // self.n_heads

    @property
    def prefix(self) -> bool:
        """Conditions enter as a prefix of the decoder input (melody, style), not by cross-attention."""
        return self.melody or self.style

    @property
    def codebooks_per_channel(self) -> int:
        return self.n_codebooks // self.audio_channels


@dataclass
class MusicGenConfig:
    """A whole checkpoint: the decoder we run plus the sub-configs of the reused T5 and EnCodec."""

    decoder: DecoderConfig
    text_encoder: dict  # transformers T5Config as a dict
    audio_encoder: dict  # transformers EncodecConfig as a dict
    sample_rate: int
    frame_rate: int  # codec frames (decoder steps) per second of audio

    @classmethod
    def from_dict(cls, raw: dict) -> "MusicGenConfig":
        model_type = raw.get("model_type")
        if model_type not in ("musicgen", "musicgen_melody"):
            raise CheckpointError(f"config.json describes a '{model_type}' model, not a MusicGen checkpoint")
        try:
            dec, text, audio = raw["decoder"], raw["text_encoder"], raw["audio_encoder"]
            text_dim = text["d_model"]
            cross = dec.get("cross_attention_hidden_size")
            decoder = DecoderConfig(
                dim=dec["hidden_size"],
                n_layers=dec["num_hidden_layers"],
                n_heads=dec["num_attention_heads"],
                ffn_dim=dec["ffn_dim"],
                n_codebooks=dec["num_codebooks"],
                vocab_size=dec["vocab_size"],
                audio_channels=dec.get("audio_channels", 1),
                max_positions=dec.get("max_position_embeddings", 2048),
                text_dim=text_dim,
                text_proj=text_dim != dec["hidden_size"] and (cross is None or model_type == "musicgen_melody"),
                pad_token=dec.get("pad_token_id", dec["vocab_size"]),
                melody=model_type == "musicgen_melody",
                chroma_dim=raw.get("num_chroma", 12),
                chroma_length=raw.get("chroma_length", 235),
                chroma_proj=raw.get("num_chroma", 12) != dec["hidden_size"],
            )
            sample_rate = audio["sampling_rate"]
            hop = 1
            for ratio in audio["upsampling_ratios"]:
                hop *= ratio
        except KeyError as missing:
            raise CheckpointError(f"config.json lacks the field {missing}") from None
        if dec.get("activation_function", "gelu") != "gelu":
            raise CheckpointError(f"decoder activation '{dec['activation_function']}' is not supported (gelu only)")
        if dec.get("scale_embedding"):
            raise CheckpointError("decoders with scale_embedding are not supported")
        if sample_rate % hop:
            raise CheckpointError(f"codec hop {hop} does not divide its sample rate {sample_rate}")
        return cls(decoder, text, audio, sample_rate, sample_rate // hop)

    @property
    def hop_length(self) -> int:
        return self.sample_rate // self.frame_rate
