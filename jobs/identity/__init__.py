"""Identity resolution: normalise identifiers, build the identifier graph, keep junk out, connect personas."""
