"""Method pieces: losses, Focus Area mixing, EMA teacher, ramps, and the per-method steps."""
