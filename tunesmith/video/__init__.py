"""Video scoring through ffmpeg: probing, muxing with the picture untouched."""
