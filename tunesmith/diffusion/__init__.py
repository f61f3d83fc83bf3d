"""What the diffusion families (stable_audio, acestep) share, below both: the C kernels (kernels.c,
called through ops.py; built by tunesmith/native.py), the CPU DiT levers (dit.py), the tiled Oobleck
VAE decoder (oobleck.py) and the reading of diffusers pipeline folders (folder.py). Nothing here
imports a family."""
