"""The converter: turns the audio of a video into an MP3, and the worker that runs it."""
