"""The persona features: declared in `catalog`, computed per partition as of a cut-off, documented in FEATURES.md.

catalog      Feature declarations (Feast-style): names, groups, types, windows, the statistic computing each
inputs       the columns features read (the contract's, from `jobs.contract.schema`) and the rows a cut-off sees
partition    one partition's events in canonical order, with the arrays the statistics share
stats        the statistics the catalogue names
prices       category median prices (the global fact beyond a persona's own events)
social       forwarded campaign clicks (a shuffle by click token)
compute      one partition at one or every cut-off; `compute_local`, the single-process baseline
distributed  every snapshot of the run plan on Ray (one read, one shuffle by persona)
docs         FEATURES.md;  matrix: the float32 matrix XGBoost reads
"""
