"""``scalyproxy init-config``: from a live cluster to a config in shadow mode.

Pure parts, testable without a server: :mod:`.infer` (sampled documents ->
structure), :mod:`.validator` (``$jsonSchema`` -> structure, and the merge),
:mod:`.indexes` (``listIndexes`` / catalogue / ``--shard-key`` -> indexes),
:mod:`.plan` (one collection put together), :mod:`.render` (YAML with
comments), :mod:`.uri` (the URI without credentials). The I/O is
:mod:`.source` (pymongo) and :mod:`.command` (arguments, progress, the file).
"""
