"""Media primitives shared by every role: the session clock and PCM audio."""
