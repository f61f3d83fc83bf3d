"""Stable Audio Open 1.0 and small: diffusers' pipeline parts, tunesmith's sampling and CPU path."""
