"""Ray plumbing shared by the stages: the session a command runs in, and hash shuffles (one mechanism)."""
