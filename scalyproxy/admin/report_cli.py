"""``scalyproxy report --admin URL``: fetch a running proxy's ``/report`` and print it."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

from scalyproxy.admin.report import format_table

TIMEOUT_S = 10.0


def report_url(admin: str) -> str:
    """``127.0.0.1:9216``, ``http://host:9216`` or ``http://host:9216/report`` -> the report URL."""
    url = admin if "://" in admin else f"http://{admin}"
    url = url.rstrip("/")
    return url if url.endswith("/report") else url + "/report"


def fetch_report(admin: str) -> dict[str, Any]:
    with urllib.request.urlopen(report_url(admin), timeout=TIMEOUT_S) as resp:
        doc = json.loads(resp.read().decode("utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise ValueError("the answer is not a scalyproxy report (no 'entries' list)")
    return doc


def main(admin: str, as_json: bool = False) -> int:
    try:
        doc = fetch_report(admin)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        print(f"scalyproxy report: cannot read {report_url(admin)}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=1) if as_json else format_table(doc))
    return 0
