"""Identity resolution: the identifier graph (`graph`), junk rules (`junk`), connected components
(`components`), personas (`personas`), the partition steps (`steps`) and the one sequence of them for one
process or Ray (`rounds`, `distributed`); scores against a ground truth (`evaluation`)."""
