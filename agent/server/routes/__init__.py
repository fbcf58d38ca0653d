"""One router per resource: health, models, chat completions, audio, personas."""
