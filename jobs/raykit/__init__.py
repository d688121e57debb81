"""Ray plumbing shared by the stages: the session a command runs in, hash shuffles (one mechanism), tree
reductions of per-block partials, and joins (broadcast while one side is small, else a hash join)."""
