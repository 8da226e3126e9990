"""Evidence from traffic: command skeletons, the traffic profile, and what-if.

One idea seen three ways: a command is reduced to a skeleton once
(:mod:`~scalyproxy.evidence.skeleton`), the profile counts skeletons by
application with their verdicts and latencies (:mod:`~scalyproxy.evidence.table`,
filled by :mod:`~scalyproxy.evidence.recorder`), and the engine that decides
live traffic decides the skeletons again later (:mod:`~scalyproxy.evidence.whatif`).
Pure: it imports ``policy`` and ``wire``, never ``server``; the sinks that
store profiles are in :mod:`scalyproxy.sinks`.
"""
