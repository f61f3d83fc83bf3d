"""The CPU levers shared by the diffusion families (stable_audio, acestep), below both: the C
kernels and their builder (build.py, kernels.c, ops.py) and the tiled Oobleck VAE decoder
(oobleck.py). Nothing here imports a family."""
