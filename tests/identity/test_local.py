"""The single-process resolver (`jobs.identity.local`, the benchmarks' baseline) against the Ray stage on the
same generated files: the same five tables, so the same personas, groupings and junk refusals."""

import datetime as dt

import pyarrow as pa
import pyarrow.compute as pc

from jobs.config import JobConfig, StorageConfig
from jobs.identity.local import OUTPUTS, resolve_files
from jobs.run.layout import RunLayout
from jobs.run.pipeline import run_pipeline
from jobs.run.stage import Stage, ordered
from jobs.stages import resolve
from jobs.storage import read_arrow
from jobs.synthetic import write_events


def _rows(table: pa.Table) -> pa.Table:
    """Rows in one order (every non-list column a key), NaN as null, one chunk per column."""
    for i, field in enumerate(table.schema):
        if pa.types.is_floating(field.type):
            column = table.column(i)
            table = table.set_column(i, field, pc.if_else(pc.is_nan(column), pa.scalar(None, field.type), column))
    keys = [(f.name, "ascending") for f in table.schema if not pa.types.is_list(f.type)]
    return table.sort_by(keys).combine_chunks()


def test_single_process_resolver_writes_what_the_ray_stage_publishes(ray_cluster, tmp_path):
    events = str(tmp_path / "events")
    write_events(events, StorageConfig(), persons=300, partners=4, days=30, seed=13, rows_per_file=4000)
    config = JobConfig(events=events, run_date=dt.date(2026, 3, 1), ray={"num_partitions": 3})
    layout = RunLayout(str(tmp_path / "runs" / "r1"))
    run_pipeline(config, ordered([Stage.of(resolve.run)]), names=["resolve"], layout=layout)

    local = resolve_files(events, config, out=str(tmp_path / "local"))
    assert set(local["seconds"]) == {"read", "resolve", "write"}
    for name in OUTPUTS:
        published = read_arrow(layout.table(name), config.storage)
        assert local[name].schema == published.schema, name
        assert local[name].num_rows == published.num_rows, name
        assert _rows(local[name]).equals(_rows(published)), name
    # the sample exercises the rules: personas joining several identifiers, and junk refused
    assert local["personas"].num_rows > 250
    personas = local["personas"]
    linked = pc.add(personas.column("n_devices"), pc.add(personas.column("n_emails"), personas.column("n_customers")))
    assert pc.max(linked).as_py() > 2
    rules = set(local["identity_audit"].column("rule").to_pylist())
    assert {"invalid_email", "shared_device"} & rules, rules
