"""Every model method through the proxy (config/blog.yaml) against FerretDB, sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest
from bson.objectid import ObjectId
from pymongo import ReturnDocument

from scalymongo_client import AsyncConnection, Connection, Document
from scalymongo_client.errors import (
    DocumentNotFound,
    GlobalQueryException,
    ScalyMongoWarning,
    SchemaViolation,
    ShardKeyViolation,
)
from tests.conftest import ProxyProcess


def declare() -> type[Document]:
    class BlogPost(Document):
        structure = {
            'author': str, 'title': str, 'body': str, 'unique_views': int,
            'comments': [{'author': str, 'comment': str, 'rank': int}],
        }
        indexes = [{'fields': ['author', 'title'], 'shard_key': True, 'unique': True}]
        default_values = {'unique_views': 0}
        __database__ = 'blog'
        __collection__ = 'blog_posts'

    return BlogPost


@pytest.fixture()
def posts(blog_proxy: ProxyProcess, direct_client: pymongo.MongoClient) -> Iterator[Any]:
    direct_client.blog.blog_posts.drop()
    conn = Connection(blog_proxy.uri, serverSelectionTimeoutMS=10_000)
    try:
        yield conn.model(declare())
    finally:
        conn.close()


def seed(posts: Any, n: int = 4) -> None:
    posts.insert_many([{'author': 'ann', 'title': f't{i}', 'unique_views': i} for i in range(n)])


def test_save_inserts_then_replaces(posts: Any, direct_client: pymongo.MongoClient) -> None:
    post = posts(author='ann', title='t', body='v1')
    post.save()
    assert list(post) == ['_id', 'author', 'title', 'body', 'unique_views']
    post['body'] = 'v2'
    post.save()
    stored = list(direct_client.blog.blog_posts.find())
    assert stored == [{'_id': post['_id'], 'author': 'ann', 'title': 't', 'body': 'v2', 'unique_views': 0}]


def test_save_refuses_a_changed_shard_key(posts: Any) -> None:
    post = posts(author='ann', title='t')
    post.save()
    post['title'] = 'renamed'
    with pytest.raises(ShardKeyViolation, match='the replacement changes shard key field title'):
        post.save()


def test_reload_modify_delete(posts: Any, direct_client: pymongo.MongoClient) -> None:
    post = posts(author='ann', title='t', body='b')
    post.save()
    direct_client.blog.blog_posts.update_one({'_id': post['_id']}, {'$set': {'body': 'edited elsewhere'}})
    post.reload()
    assert post['body'] == 'edited elsewhere'
    post.modify({'$inc': {'unique_views': 5}, '$push': {'comments': {'author': 'bob', 'comment': 'hi', 'rank': 1}}})
    assert post['unique_views'] == 5 and post['comments'] == [{'author': 'bob', 'comment': 'hi', 'rank': 1}]
    with pytest.raises(SchemaViolation, match=r'^comments.\$.rank: expected int, got string'):
        post.modify({'$push': {'comments': {'author': 'x', 'comment': 'y', 'rank': 'top'}}})
    assert post.delete().deleted_count == 1
    assert direct_client.blog.blog_posts.count_documents({}) == 0
    with pytest.raises(DocumentNotFound):
        post.reload()


def test_queries(posts: Any) -> None:
    seed(posts)
    found = list(posts.find({'author': 'ann', 'title': {'$in': ['t1', 't2']}}).sort('title', -1))
    assert [p['title'] for p in found] == ['t2', 't1'] and all(type(p) is posts for p in found)
    assert posts.find({'author': 'ann'}, allow_global=True).limit(2).to_list() == list(
        posts.find({'author': 'ann'}, allow_global=True, limit=2)
    )
    assert posts.count({'author': 'ann', 'title': 't0'}) == 1
    assert posts.count(allow_global=True) == 4
    assert posts.count(allow_global=True, comment={'app': 'blog'}) == 4  # a document comment (aggregate takes one)
    assert sorted(posts.distinct('title', {'author': 'ann'}, allow_global=True)) == ['t0', 't1', 't2', 't3']
    rows = list(posts.aggregate([{'$match': {'author': 'ann', 'title': 't3'}}, {'$project': {'_id': 0, 'unique_views': 1}}]))
    assert rows == [{'unique_views': 3}]
    with pytest.raises(GlobalQueryException):
        posts.aggregate([{'$match': {'unique_views': 3}}])


def test_writes(posts: Any, direct_client: pymongo.MongoClient) -> None:
    seed(posts)
    assert posts.update_one({'author': 'ann', 'title': 't0'}, {'$set': {'body': 'x'}}).modified_count == 1
    assert posts.update_many({'author': 'ann'}, {'$inc': {'unique_views': 10}}, allow_global=True).modified_count == 4
    assert posts.update_one({'author': 'bob', 'title': 'new'}, {'$set': {'body': 'up'}}, upsert=True).upserted_id
    after = posts.find_one_and_update(
        {'author': 'ann', 'title': 't1'}, {'$set': {'body': 'y'}}, return_document=ReturnDocument.AFTER
    )
    assert after['body'] == 'y' and after['unique_views'] == 11 and type(after) is posts
    assert posts.delete_one({'author': 'ann', 'title': 't2'}).deleted_count == 1
    assert posts.delete_many({'author': 'ann'}, allow_global=True, comment='cleanup').deleted_count == 3
    assert [d['author'] for d in direct_client.blog.blog_posts.find()] == ['bob']


def test_insert_many_gives_ids_and_refuses_whole_batches(posts: Any, direct_client: pymongo.MongoClient) -> None:
    docs = [posts(author='ann', title=f'p{i}') for i in range(3)]
    result = posts.insert_many(docs)
    assert result.inserted_ids == [d['_id'] for d in docs] and all(isinstance(d['_id'], ObjectId) for d in docs)
    bad = [{'author': 'ann', 'title': f'q{i}'} for i in range(1000)]
    bad[999]['comments'] = [{'author': 'c', 'comment': 'd', 'rank': 'high'}]
    with pytest.raises(SchemaViolation, match=r'^comments.0.rank: expected int, got string \(blog.blog_posts documents.999\)$'):
        posts.insert_many(bad)
    assert direct_client.blog.blog_posts.count_documents({}) == 3


def test_unindexed_queries_warn(posts: Any) -> None:
    seed(posts, 1)
    with pytest.warns(ScalyMongoWarning, match='no declared index serves the filter on body'):
        assert posts.find_one({'body': 'none'}, allow_global=True) is None


def test_ensure_indexes_on_ferretdb_warns_and_creates(posts: Any, direct_client: pymongo.MongoClient) -> None:
    with pytest.warns(ScalyMongoWarning, match="not a mongos.*not sharded"):
        names = posts.ensure_indexes()
    assert names == ['author_1_title_1']
    info = direct_client.blog.blog_posts.index_information()
    assert info['author_1_title_1']['key'] == [('author', 1), ('title', 1)] and info['author_1_title_1']['unique']
    posts(author='a', title='t').save()
    with pytest.raises(pymongo.errors.DuplicateKeyError):
        posts(author='a', title='t').save()


def test_async_api(blog_proxy: ProxyProcess, direct_client: pymongo.MongoClient) -> None:
    direct_client.blog.blog_posts.drop()
    model = declare()

    async def run() -> None:
        async with AsyncConnection(blog_proxy.uri, serverSelectionTimeoutMS=10_000) as conn:
            posts: Any = conn.model(model)
            await posts.insert_many([{'author': 'ann', 'title': f't{i}'} for i in range(3)])
            post = posts(author='ann', title='mine', body='b')
            await post.save()
            post['body'] = 'b2'
            await post.save()
            await post.modify({'$inc': {'unique_views': 2}})
            assert post['unique_views'] == 2 and post['body'] == 'b2'
            await post.reload()
            assert [p['title'] async for p in posts.find({'author': 'ann', 'title': {'$in': ['t0', 'mine']}}).sort('title')] == ['mine', 't0']
            assert len(await posts.find({'author': 'ann'}, allow_global=True).to_list()) == 4
            assert await posts.count({'author': 'ann'}, allow_global=True) == 4
            assert sorted(await posts.distinct('title', {'author': 'ann'}, allow_global=True)) == ['mine', 't0', 't1', 't2']
            cursor = await posts.aggregate([{'$match': {'author': 'ann', 'title': 't1'}}, {'$project': {'_id': 0, 'title': 1}}])
            assert await cursor.to_list() == [{'title': 't1'}]
            assert (await posts.update_one({'author': 'ann', 'title': 't0'}, {'$set': {'body': 'x'}})).modified_count == 1
            assert (await posts.update_many({'author': 'ann'}, {'$set': {'body': 'y'}}, allow_global=True)).matched_count == 4
            got = await posts.find_one_and_update({'author': 'ann', 'title': 't2'}, {'$set': {'body': 'z'}}, return_document=ReturnDocument.AFTER)
            assert got['body'] == 'z'
            with pytest.raises(GlobalQueryException):
                await posts.delete_one({'author': 'ann'})
            assert (await posts.delete_one({'author': 'ann', 'title': 't0'})).deleted_count == 1
            await post.delete()
            assert (await posts.delete_many({'author': 'ann'}, allow_global=True)).deleted_count == 2
            with pytest.warns(ScalyMongoWarning, match='not a mongos'):
                assert await posts.ensure_indexes() == ['author_1_title_1']

    asyncio.run(run())
    assert direct_client.blog.blog_posts.count_documents({}) == 0
