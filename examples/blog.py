"""Issue 6's session, step by step, against a running proxy.

Start the proxy as the README says (it listens on 127.0.0.1:27017, with the
embedded FerretDB as its backend):

    scalyproxy run --config config/blog.yaml --embedded-backend

then run:

    python examples/blog.py                          # mongodb://127.0.0.1:27017
    python examples/blog.py mongodb://127.0.0.1:27117
    SCALY_PROXY_URI=mongodb://127.0.0.1:27117 python examples/blog.py

The module also works as a models module for the export:

    python -m scalymongo_client export-config examples.blog
"""

from __future__ import annotations

import os
import sys
from typing import Any

from pymongo.errors import OperationFailure

from scalymongo_client import Connection, Document
from scalymongo_client.errors import GlobalQueryException

DEFAULT_URI = "mongodb://127.0.0.1:27017"


class BlogPost(Document):
    structure = {
        'author': str, 'title': str, 'body': str, 'unique_views': int,
        'comments': [{'author': str, 'comment': str, 'rank': int}],
    }
    indexes = [{'fields': ['author', 'title'], 'shard_key': True, 'unique': True}]
    __database__ = 'blog'
    __collection__ = 'blog_posts'


def step(code: str, result: Any = None, *, shown: bool = True) -> None:
    """Print one step of the session as the interpreter would show it."""
    print(f">>> {code}")
    if shown and result is not None:
        print(repr(result))


def refused(code: str, exc: BaseException) -> None:
    print(f">>> {code}")
    print("Traceback (most recent call last):")
    print(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")


def main(argv: list[str]) -> int:
    uri = argv[1] if len(argv) > 1 else os.environ.get("SCALY_PROXY_URI", DEFAULT_URI)
    print(f"# connecting to the proxy at {uri}")
    conn = Connection(uri, serverSelectionTimeoutMS=5000)
    try:
        return session(conn)
    finally:
        conn.close()


def session(conn: Connection) -> int:
    posts = conn.models.BlogPost
    gone = posts.delete_many({'author': 'Allan', 'title': 'My first post'})
    print(f"# removed {gone.deleted_count} post(s) left by an earlier run (a targeted delete)")
    step("post = conn.models.BlogPost()")
    post = posts()
    step("post['author'] = 'Allan'")
    post['author'] = 'Allan'
    step("post['title'] = 'My first post'")
    post['title'] = 'My first post'
    step("post['body'] = \"Well, I don't actually have anything to write about...\"")
    post['body'] = "Well, I don't actually have anything to write about..."
    step("post.save()", post.save())
    try:
        posts.find_one({'author': 'Allan'})
    except GlobalQueryException as exc:
        refused("conn.models.BlogPost.find_one({'author': 'Allan'})", exc)
    else:
        print("error: the global query was not refused", file=sys.stderr)
        return 1
    found = posts.find_one({'author': 'Allan', 'title': 'My first post'})
    step("conn.models.BlogPost.find_one({'author': 'Allan', 'title': 'My first post'})", found)
    anyway = posts.find_one({'author': 'Allan'}, allow_global=True)
    step("conn.models.BlogPost.find_one({'author': 'Allan'}, allow_global=True)", anyway)
    print("# the proxy says the same to any driver (plain pymongo, no client-side check):")
    try:
        conn.client.blog.blog_posts.find_one({'author': 'Allan'})
    except OperationFailure as exc:
        details = exc.details or {}
        refused("conn.client.blog.blog_posts.find_one({'author': 'Allan'})", exc)
        print(f"# codeName={details.get('codeName')} code={exc.code}")
    else:
        print("error: the proxy did not refuse the global query", file=sys.stderr)
        return 1
    return 0 if found is not None and anyway is not None else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
