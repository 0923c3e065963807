"""Relay routes: OpenAI-compatible (and Claude/Gemini key sources) with quota accounting."""
