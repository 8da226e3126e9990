"""Document classes for the export-config tests (imported by module name, never collected)."""

from __future__ import annotations

import datetime

from bson.objectid import ObjectId

from scalymongo_client import Document


class BlogPost(Document):
    structure = {
        'author': str, 'title': str, 'body': str, 'unique_views': int,
        'comments': [{'author': str, 'comment': str, 'rank': int}],
    }
    indexes = [{'fields': ['author', 'title'], 'shard_key': True, 'unique': True}]
    __database__ = 'blog'
    __collection__ = 'blog_posts'


class Event(Document):
    """A hashed shard key, nullable and union types, defaults, rules and a sort index."""

    structure = {
        'user_id': ObjectId,
        'at': datetime.datetime,
        'kind': 'string',
        'score': int | float,
        'note': str | None,
        'tags': [str],
        'payload': {'size': int, 'source': 'string?'},
    }
    required_fields = ['kind', 'payload.size']
    default_values = {'tags': list, 'score': 0}
    indexes = [
        {'fields': ['user_id'], 'hashed': True, 'shard_key': True},
        {'fields': [('at', -1)]},
    ]
    additional_fields = True
    rules = {'unindexed_query': 'off'}
    __database__ = 'metrics'
    __collection__ = 'events'


class Abstract(Document):
    """No namespace: not exported."""

    structure = {'x': int}
