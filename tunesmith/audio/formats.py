"""The audio formats tunesmith writes, in one place: the CLI's choices and the server's bodies read them
here (no numpy, no soundfile: `tunesmith --help` stays cheap), audio.io writes them."""

FORMATS = ("wav", "flac", "mp3", "ogg", "m4a")  # WAV and FLAC through libsndfile, the others through ffmpeg
WAV_SUBTYPES = {"pcm16": "PCM_16", "pcm24": "PCM_24", "float": "FLOAT"}  # WAV's samples (FLAC: pcm16, pcm24)
WAV_FORMATS = tuple(WAV_SUBTYPES)
