"""The HTTP routes, as routers: mlx-audiogen's (compat.py), so that its clients work unchanged, and
tunesmith's own (jobs.py), which take everything `tunesmith generate` takes."""
