"""Hot reload: on SIGHUP and when the config file changes.

The new file is read, validated and compiled (config + :class:`Engine`) in a
worker thread (all of it is pure), then swapped into the proxy on the event
loop in one step: connections decide their next command with the new policy.
Anything wrong keeps the running config: every problem is logged with its line
and the failure is counted (``scalyproxy_config_reloads_total{outcome="failure"}``).

What cannot change without a restart (``listen``, ``workers``, ``upstream``, ``tls``,
``admin_listen``, ``profile.sink``, ``profile.flush_interval_s``) keeps its running value and a ``reload_restart_required``
line names it; everything else (rules, collections, ``read_only``,
``log_level``, ``log_values``, ``log_repeats_s``, ``report_size``, ``limits``, drift settings)
takes effect at once. ``--listen``/``--upstream`` given on the command line
therefore survive a reload.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar

from scalyproxy.config import ConfigError, ProxyConfig, load_config, load_snapshot
from scalyproxy.logs import log
from scalyproxy.policy import Engine
from scalyproxy.server.proxy import Proxy

POLL_INTERVAL_S: Final = 1.0
RESTART_ONLY: Final = ("listen", "workers", "upstream", "tls", "admin_listen", "profile.sink", "profile.flush_interval_s")

_T = TypeVar("_T")
FileStamp = tuple[int, int, int]  # mtime_ns, size, inode


@dataclass(frozen=True)
class Built:
    from_file: ProxyConfig  # as the file says
    config: ProxyConfig  # what runs: restart-only fields keep their running values
    engine: Engine
    changed: list[str]  # restart-only fields the file changed since it was last loaded


def build(path: str, running: ProxyConfig, last_file: ProxyConfig, text: str | None = None) -> Built:
    """Load and compile ``path`` (or ``text``, read from it earlier). Raises ConfigError (or
    another exception) when it cannot be used.

    ``last_file`` is the file as last loaded, so that ``--listen``/``--upstream``
    overrides are not taken for changes.
    """
    from_file = load_config(path) if text is None else load_snapshot(text, path)
    changed = [name for name in RESTART_ONLY if _get(from_file, name) != _get(last_file, name)]
    config = keep_running(from_file, running)
    return Built(from_file, config, Engine.from_config(config), changed)


def keep_running(config: ProxyConfig, running: ProxyConfig) -> ProxyConfig:
    """``config`` with the restart-only fields of ``running``."""
    for name in RESTART_ONLY:
        config = _replaced(config, name, _get(running, name))
    return config


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _replaced(obj: ProxyConfig, dotted: str, value: Any) -> ProxyConfig:
    """``obj`` with the (maybe nested, e.g. ``profile.sink``) field set to ``value``."""
    head, _, rest = dotted.partition(".")
    changes: dict[str, Any] = {head: value}
    if rest:
        changes = {head: dataclasses.replace(getattr(obj, head), **{rest: value})}
    return dataclasses.replace(obj, **changes)


def stamp(path: str) -> FileStamp | None:
    try:
        st = os.stat(path)  # follows symlinks: a Kubernetes ConfigMap swap changes the inode
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def file_hash(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


class Reloadable(Protocol):
    """What a :class:`Reloader` reloads: a :class:`Proxy`, or a fleet's supervisor."""

    @property
    def config(self) -> ProxyConfig: ...

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None: ...


class Reloader:
    """Reloads ``path`` into ``proxy``; ``on_applied(config)`` runs after each swap."""

    def __init__(self, proxy: Reloadable, path: str, from_file: ProxyConfig,
                 on_applied: Callable[[ProxyConfig], None], on_failed: Callable[[], None]) -> None:
        self.proxy = proxy
        self.path = path
        self.from_file = from_file
        self.on_applied = on_applied
        self.on_failed = on_failed
        self._stamp = stamp(path)
        self._seen_hash = proxy.config.source_hash  # the content last tried (good or bad)
        self._lock = asyncio.Lock()

    def request(self, trigger: str) -> None:
        """Schedule a reload (signal handlers call this)."""
        self.proxy.spawn(self.reload(trigger))

    async def reload(self, trigger: str) -> bool:
        async with self._lock:  # one at a time; a SIGHUP during a reload runs after it
            return await self._reload(trigger)

    async def _reload(self, trigger: str) -> bool:
        assert isinstance(self.proxy, Proxy)
        built = await self._build(trigger, build, self.path, self.proxy.config, self.from_file)
        if built is None:
            return False
        self._accepted(built)
        new = built.config
        self.proxy.apply(new, built.engine)
        log.set_level(new.log_level)
        self.on_applied(new)
        log.info("config_reloaded", trigger=trigger, config=self.path, generation=self.proxy.generation,
                 config_hash=new.source_hash[:12], collections=len(new.collections), read_only=new.read_only)
        return True

    async def _build(self, trigger: str, make: Callable[..., _T], *args: Any) -> _T | None:
        """``make(*args)`` in a thread (it reads and compiles the file); None, logged and
        counted, when the file cannot be used."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, make, *args)
        except ConfigError as exc:
            self._failed(trigger, exc)
        except Exception as exc:  # a bug in compiling must not take the proxy down
            log.error("config_reload_failed", trigger=trigger, config=self.path, errors=1, error=repr(exc))
            self.on_failed()
        return None

    def _accepted(self, built: Built) -> None:
        self._seen_hash = built.config.source_hash
        self.from_file = built.from_file
        if built.changed:
            log.warning("reload_restart_required", config=self.path, fields=built.changed,
                        detail="these settings keep their running values until a restart")

    def _failed(self, trigger: str, exc: ConfigError) -> None:
        self._seen_hash = file_hash(self.path) or self._seen_hash
        log.error("config_reload_failed", trigger=trigger, config=self.path, errors=len(exc.issues),
                  detail="the running config stays in force")
        for issue in exc.issues:
            log.error("config_error", config=exc.source, line=issue.line, key=issue.path, message=issue.message)
        self.on_failed()

    async def watch(self, interval: float = POLL_INTERVAL_S) -> None:
        """Poll the file every ``interval`` seconds; reload when its content changes."""
        while True:
            await asyncio.sleep(interval)
            now = stamp(self.path)
            if now is None or now == self._stamp:
                continue
            self._stamp = now
            digest = file_hash(self.path)
            if digest is not None and digest != self._seen_hash:
                await self.reload("file_changed")
