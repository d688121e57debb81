"""smart segments: cross-partner personas and look-alike segments on Ray."""
