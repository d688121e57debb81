"""The online half: publish a finished run as a release, serve profiles on Ray Serve, take live events.

source.py       the ONE reader of a finished batch run (scores, identity, features, models)
identifiers.py  lookup keys, link ids, partner-scoped persona tokens
online.py       the features the online path updates and the intents (declared lists)
publish.py      `segments publish`: run -> release (Parquet, Ray tasks) -> current.json (+ Redis)
stores.py       where replicas read a release: embedded (memory) or redis
live.py         live events: validation, durable micro-batches, the log replicas tail, rescoring
partner_keys.py API keys (only hashes are stored)
app.py          the Ray Serve application and `segments serve`
"""
