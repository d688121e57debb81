"""Running a job: the run plan, the layout of a run, stages and the runner, the lease, the summary."""
