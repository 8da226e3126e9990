"""The hand-written source of the database methods and the cursor, as coroutines.

``tools/synchro.py`` generates :mod:`scalymongo_client.synchronous` from the
modules here; edit these, then run it (docs/client.md, "How the sync API is made").
"""
