"""The online half: publish a finished run as a release, serve profiles on Ray Serve, take live events.

source.py       the ONE reader of a finished batch run (scores, identity, features, models)
identifiers.py  lookup keys, link ids, partner-scoped persona tokens
online.py       how live events move the online features (features.catalog Feature.online) and the intents
publish.py      `segments publish`: run -> release (Parquet, Ray tasks) -> current.json (+ Redis)
stores.py       where replicas read a release: embedded (memory) or redis
live.py         live events: validation, durable micro-batches and their compaction, the log replicas tail,
                rescoring
partner_keys.py API keys (only hashes are stored)
app.py          the Ray Serve application and `segments serve`
synthetic.py    a synthetic finished run (the serving tests' fixture, bench_serve); never in production
"""
