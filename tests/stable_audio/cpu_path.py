"""The CPU path (bfloat16 / int8 DiT, tiled bfloat16 decoder) against the float32 reference path."""

import numpy as np

import tunesmith
from tunesmith.stable_audio.cpu import DiTCPU, OobleckDecoderCPU

PROMPTS = ["rain", "dusty vinyl hip hop beat"]


def snr_db(reference: np.ndarray, x: np.ndarray) -> float:
    return float(10 * np.log10((reference ** 2).sum() / ((reference - x) ** 2).sum()))


def check_cpu_path(folder, reference_model, dtype, quantize, floor_db, **options):
    """Same seeds, same noise: the CPU path's audio within floor_db of float32's, clip for clip."""
    fast = tunesmith.load(folder, device="cpu", dtype=dtype, quantize=quantize)
    assert isinstance(fast._parts.transformer, DiTCPU) and isinstance(fast._parts.decoder, OobleckDecoderCPU)
    reference = reference_model.generate(PROMPTS, duration=0.4, seed=3, **options)
    clips = fast.generate(PROMPTS, duration=0.4, seed=3, **options)
    for ref, clip in zip(reference, clips):
        assert clip.audio.shape == ref.audio.shape and clip.seed == ref.seed
        assert snr_db(ref.audio, clip.audio) > floor_db
        assert clip.params["dtype"] == dtype and clip.params.get("quantize") == quantize
