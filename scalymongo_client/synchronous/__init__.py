"""The synchronous database methods and cursor, generated from :mod:`scalymongo_client.asynchronous`.

Do not edit the modules here: edit their source in ``scalymongo_client/asynchronous/``
and run ``python tools/synchro.py`` (tests/unit/client/test_synchro.py fails otherwise).
"""
