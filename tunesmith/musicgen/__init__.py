"""The MusicGen engine: plain tensors in and out, no files, CLI or HTTP."""
