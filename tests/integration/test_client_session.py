"""Issue 6's session, as written, through the proxy (config/blog.yaml) against FerretDB: sync and async."""

from __future__ import annotations

import asyncio
import doctest
from typing import Any

import pymongo
import pytest
from bson.objectid import ObjectId
from pymongo.errors import OperationFailure

from scalymongo_client import AsyncConnection, Connection, Document
from scalymongo_client.errors import GlobalQueryException
from tests.conftest import ProxyProcess

BODY = "Well, I don't actually have anything to write about..."
MESSAGE = "Some or all of the shard key was not specified.  Missing fields were title."

# Issue 6's session, verbatim (only the port is the test proxy's).
SESSION = """
>>> from scalymongo_client import Document, Connection
>>> class BlogPost(Document):
...     structure = {
...         'author': str, 'title': str, 'body': str, 'unique_views': int,
...         'comments': [{'author': str, 'comment': str, 'rank': int}],
...     }
...     indexes = [{'fields': ['author', 'title'], 'shard_key': True, 'unique': True}]
...     __database__ = 'blog'
...     __collection__ = 'blog_posts'
>>> conn = Connection("localhost", 27017)          # the proxy
>>> post = conn.models.BlogPost()
>>> post['author'] = 'Allan'
>>> post['title'] = 'My first post'
>>> post['body'] = "Well, I don't actually have anything to write about..."
>>> post.save()
>>> conn.models.BlogPost.find_one({'author': 'Allan'})
Traceback (most recent call last):
scalymongo_client.errors.GlobalQueryException: Some or all of the shard key was not specified.  Missing fields were title.
>>> conn.models.BlogPost.find_one({'author': 'Allan', 'title': 'My first post'})
{'_id': ObjectId('...'), 'author': 'Allan', 'title': 'My first post', 'body': "Well, I don't actually have anything to write about..."}
>>> conn.models.BlogPost.find_one({'author': 'Allan'}, allow_global=True)
{'_id': ObjectId('...'), ...}
"""


def _declare() -> type[Document]:
    class BlogPost(Document):
        structure = {
            'author': str, 'title': str, 'body': str, 'unique_views': int,
            'comments': [{'author': str, 'comment': str, 'rank': int}],
        }
        indexes = [{'fields': ['author', 'title'], 'shard_key': True, 'unique': True}]
        __database__ = 'blog'
        __collection__ = 'blog_posts'

    return BlogPost


@pytest.fixture()
def clean_blog(direct_client: pymongo.MongoClient) -> None:
    """Re-runs start from an empty blog.blog_posts (dropped on the backend, not through the proxy)."""
    direct_client.blog.blog_posts.drop()


def _check_found(found: Any, post_id: ObjectId) -> None:
    assert found == {'_id': post_id, 'author': 'Allan', 'title': 'My first post', 'body': BODY}
    assert list(found) == ['_id', 'author', 'title', 'body']
    assert type(found).__name__ == 'BlogPost'


def test_session_as_a_doctest(blog_proxy: ProxyProcess, clean_blog: None) -> None:
    """The session text itself, run by doctest (ELLIPSIS for the ObjectId and the '...')."""
    text = SESSION.replace('Connection("localhost", 27017)', f'Connection("127.0.0.1", {blog_proxy.port})')
    assert text != SESSION
    test = doctest.DocTestParser().get_doctest(text, {"ObjectId": ObjectId}, "issue6", None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    out: list[str] = []
    try:
        runner.run(test, out=out.append, clear_globs=False)
    finally:
        conn = test.globs.get("conn")
        if conn is not None:
            conn.close()
    assert runner.failures == 0, "".join(out)
    assert runner.tries == 11  # the class statement is one example


def test_session_sync(blog_proxy: ProxyProcess, clean_blog: None, direct_client: pymongo.MongoClient) -> None:
    _declare()
    conn = Connection(blog_proxy.uri, serverSelectionTimeoutMS=10_000)
    try:
        post = conn.models.BlogPost()
        post['author'] = 'Allan'
        post['title'] = 'My first post'
        post['body'] = BODY
        assert post.save() is None
        assert isinstance(post['_id'], ObjectId)
        with pytest.raises(GlobalQueryException) as refused:
            conn.models.BlogPost.find_one({'author': 'Allan'})
        assert str(refused.value) == MESSAGE
        assert refused.type is GlobalQueryException  # the client's own check: no round trip
        found = conn.models.BlogPost.find_one({'author': 'Allan', 'title': 'My first post'})
        _check_found(found, post['_id'])
        anyway = conn.models.BlogPost.find_one({'author': 'Allan'}, allow_global=True)
        _check_found(anyway, post['_id'])
    finally:
        conn.close()
    stored = direct_client.blog.blog_posts.find_one({'_id': post['_id']})
    assert stored is not None and stored['body'] == BODY


def test_session_async(blog_proxy: ProxyProcess, clean_blog: None) -> None:
    _declare()

    async def session() -> None:
        conn = AsyncConnection(blog_proxy.uri, serverSelectionTimeoutMS=10_000)
        try:
            post = conn.models.BlogPost()
            post['author'] = 'Allan'
            post['title'] = 'My first post'
            post['body'] = BODY
            assert await post.save() is None
            with pytest.raises(GlobalQueryException) as refused:
                await conn.models.BlogPost.find_one({'author': 'Allan'})
            assert str(refused.value) == MESSAGE
            found = await conn.models.BlogPost.find_one({'author': 'Allan', 'title': 'My first post'})
            _check_found(found, post['_id'])
            anyway = await conn.models.BlogPost.find_one({'author': 'Allan'}, allow_global=True)
            _check_found(anyway, post['_id'])
            listed = [p async for p in conn.models.BlogPost.find({'author': 'Allan'}, allow_global=True)]
            assert listed == [found]
        finally:
            await conn.close()

    asyncio.run(session())


def test_proxy_itself_refuses_the_global_query(blog_proxy: ProxyProcess) -> None:
    """The same query sent by plain pymongo (no client check) is refused by the proxy, word for word."""
    client: pymongo.MongoClient = pymongo.MongoClient(blog_proxy.uri, serverSelectionTimeoutMS=10_000)
    try:
        with pytest.raises(OperationFailure) as refused:
            client.blog.blog_posts.find_one({'author': 'Allan'})
        assert refused.value.details is not None
        assert refused.value.details['errmsg'] == MESSAGE
        assert refused.value.details['codeName'] == 'ScalyGlobalQuery'
    finally:
        client.close()
