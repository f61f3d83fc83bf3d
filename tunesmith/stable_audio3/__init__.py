"""Stable Audio 3 (Small and Medium, post-trained and base): text to audio, audio-to-audio and repaint."""
