"""The deduplicator: pulls every gatherer database through persisted cursors and merges it into
production exactly once (``kalshi-deduplicator --config FILE``).

Flow, left to right (a module imports only from its left or from ``shared/``)::

    tables.py  errors.py  _backoff.py  _slots.py
    cursors.py   sync_cursors, and why the (ingest_xid, ingest_seq) cursor never skips a late commit
    pull.py      probe / keyset page (binary COPY out) / sync_acks, on one gatherer
    merge.py     one page = one production transaction (staging COPY + INSERT ... ON CONFLICT)
    sources.py production.py   connections and reachability of each database
    sync.py      the loop per (gatherer, table)
    listen.py    optional NOTIFY wake-up
    health.py    /health document, /ready
    app.py __main__.py   wiring, start/stop, CLI

Other packages import nothing from here; the process is used through its CLI.
"""
