"""Speech in and out: decoding audio files, Whisper transcription, text-to-speech."""
