"""Measuring whisperq: accuracy and speed on real speech."""
