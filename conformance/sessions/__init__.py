"""The shipped corpus of recorded sessions (spec/sessions.md) and the script that records it."""
