"""`python -m jobs ...` is `segments ...`: what a Ray Job's entrypoint runs on a cluster."""

from jobs.cli import app

app(prog_name="segments")
