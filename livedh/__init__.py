"""livedh: a real-time 2.5D digital human server.

Data flows one way: mic -> asr -> llm -> tts -> lipsync -> compositor -> transport.
Importing this package has no side effects (no models load, no threads start).
"""

__version__ = "0.1.0"
