"""``scalyproxy report --admin URL``: fetch a running proxy's ``/report`` and print it."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

from scalyproxy.admin.report import format_table

TIMEOUT_S = 10.0


def admin_url(admin: str, page: str) -> str:
    """``127.0.0.1:9216``, ``http://host:9216`` or ``http://host:9216<page>`` -> the URL of ``page``."""
    url = admin if "://" in admin else f"http://{admin}"
    url = url.rstrip("/")
    return url if url.endswith(page) else url + page


def report_url(admin: str) -> str:
    return admin_url(admin, "/report")


def fetch_json(admin: str, page: str, listing: str, what: str) -> dict[str, Any]:
    """A JSON page of the admin listener that has a ``listing`` list (ValueError or OSError when not)."""
    with urllib.request.urlopen(admin_url(admin, page), timeout=TIMEOUT_S) as resp:
        doc = json.loads(resp.read().decode("utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get(listing), list):
        raise ValueError(f"the answer is not a scalyproxy {what} (no {listing!r} list)")
    return doc


def fetch_report(admin: str) -> dict[str, Any]:
    return fetch_json(admin, "/report", "entries", "report")


def main(admin: str, as_json: bool = False) -> int:
    try:
        doc = fetch_report(admin)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        print(f"scalyproxy report: cannot read {report_url(admin)}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=1) if as_json else format_table(doc))
    return 0
