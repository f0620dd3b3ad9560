"""Analysis: capture (and node context) → ranked findings with evidence and fixes."""
