"""docker-compose.yml can start: no service waits for something that can only happen
after that service has run (issue 20: init waited for mongos to be healthy, and mongos
turns healthy only after init has initiated the config server replica set).

The start-up is modelled as events, ``(service, "started" | "healthy" | "completed")``,
and what each one requires to have happened first:

* a service's health and completion require it to have started;
* ``depends_on`` with ``service_started`` / ``service_healthy`` /
  ``service_completed_successfully`` makes its start require that event of the other;
* what a health check needs beyond the process itself, read from the commands:
  mongos (``--configdb RS/...``) listens only once replica set RS has a primary, so
  its health requires the start of the service that runs ``init-cluster
  --config-server=HOST/RS``; the proxy's /readyz (``run --config FILE``) needs its
  upstream reachable, so its health requires the health of the services its config's
  ``upstream`` names;
* ``init-cluster --mongos=HOST`` waits for that mongos, so its completion requires
  mongos's health.

Compose deadlocks exactly when these requirements have a cycle. Checked without
Docker; the Docker tier (tests/docker_tier.py) runs the same file where an engine is.
"""

from __future__ import annotations

import copy
import shlex
from pathlib import Path
from typing import Any

from scalyproxy.config import load_config
from tests.compose_file import ROOT, depends_on, load_compose

Event = tuple[str, str]
WAITED_EVENT = {"service_started": "started", "service_healthy": "healthy",
                "service_completed_successfully": "completed"}


def command_of(service: dict[str, Any]) -> list[str]:
    """entrypoint + command, as one argv list."""
    argv: list[str] = []
    for part in (service.get("entrypoint"), service.get("command")):
        if isinstance(part, str):
            argv += shlex.split(part)
        elif part:
            argv += [str(a) for a in part]
    return argv


def option(argv: list[str], name: str) -> list[str]:
    """Every value of ``--name VALUE`` / ``--name=VALUE`` in argv."""
    values = []
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(name + "="):
            values.append(arg.split("=", 1)[1])
    return values


def host_service(address: str) -> str:
    """``mongos:27017`` or ``configsvr:27019/cfg`` -> the service name it points at."""
    return address.split("/")[0].rsplit(":", 1)[0]


def initiators(services: dict[str, Any], replset: str) -> set[str]:
    """The services that initiate replica set ``replset`` (``init-cluster --config-server=HOST/RS``)."""
    return {name for name, svc in services.items() if "init-cluster" in command_of(svc)
            and any(v.rpartition("/")[2] == replset for v in option(command_of(svc), "--config-server"))}


def health_needs(services: dict[str, Any]) -> dict[str, set[Event]]:
    """For each service, what its health check needs besides the service itself."""
    needs: dict[str, set[Event]] = {}
    for name, svc in services.items():
        argv = command_of(svc)
        if argv[:1] == ["mongos"]:
            for configdb in option(argv, "--configdb"):
                replset = configdb.partition("/")[0]
                found = initiators(services, replset) or {f"<nothing initiates replica set {replset}>"}
                needs.setdefault(name, set()).update((i, "started") for i in found)
        elif "run" in argv and option(argv, "--config"):
            cfg = load_config(ROOT / "config" / Path(option(argv, "--config")[0]).name)  # the file the image ships
            needs[name] = {(h.host, "healthy") for h in cfg.upstream_hosts if h.host in services}
    return needs


def startup_requirements(compose: dict[str, Any]) -> dict[Event, set[Event]]:
    """event -> the events that must have happened before it."""
    services = compose["services"]
    requires: dict[Event, set[Event]] = {}
    for name, svc in services.items():
        requires[(name, "started")] = {(dep, WAITED_EVENT[cond]) for dep, cond in depends_on(svc).items()}
        requires[(name, "healthy")] = {(name, "started")}
        requires[(name, "completed")] = {(name, "started")}
        argv = command_of(svc)
        if "init-cluster" in argv:
            requires[(name, "completed")] |= {(host_service(m), "healthy") for m in option(argv, "--mongos")}
    for name, needed in health_needs(services).items():
        requires[(name, "healthy")] |= needed
    return requires


def find_cycle(requires: dict[Event, set[Event]]) -> list[Event] | None:
    """A cycle of requirements (each event requires the next), or None."""
    state: dict[Event, str] = {}
    path: list[Event] = []

    def visit(event: Event) -> list[Event] | None:
        state[event] = "open"
        path.append(event)
        for before in sorted(requires.get(event, ())):
            if state.get(before) == "open":
                return path[path.index(before):] + [before]
            if before not in state and (cycle := visit(before)):
                return cycle
        state[event] = "done"
        path.pop()
        return None

    for event in sorted(requires):
        if event not in state and (cycle := visit(event)):
            return cycle
    return None


def never_happen(requires: dict[Event, set[Event]]) -> set[Event]:
    """The events that require, directly or not, something no service does."""
    stuck = {e for e, before in requires.items() if any(b not in requires for b in before)}
    while grown := {e for e, before in requires.items() if e not in stuck and before & stuck}:
        stuck |= grown
    return stuck


def describe(cycle: list[Event]) -> str:
    return " -> ".join(f"{service} {what}" for service, what in cycle) + " (each needs the next first)"


# --- the file -------------------------------------------------------------------------


def test_depends_on_names_services_and_has_no_cycle() -> None:
    services = load_compose()["services"]
    graph = {name: set(depends_on(svc)) for name, svc in services.items()}
    for name, deps in graph.items():
        assert deps <= set(services), (name, deps - set(services))
        for cond in depends_on(services[name]).values():
            assert cond in WAITED_EVENT, (name, cond)
    plain = {(name, "started"): {(d, "started") for d in deps} for name, deps in graph.items()}
    cycle = find_cycle(plain)
    assert cycle is None, describe(cycle)


def test_the_model_reads_what_each_health_check_needs() -> None:
    """Without these the cycle check below could not fail: the needs come from the file."""
    services = load_compose()["services"]
    assert initiators(services, "cfg") == {"init"}
    needs = health_needs(services)
    assert needs["mongos"] == {("init", "started")}
    assert needs["scalyproxy"] == {("mongos", "healthy")}
    assert ("mongos", "healthy") in startup_requirements(load_compose())[("init", "completed")]


def test_no_service_waits_for_a_health_that_needs_it_first() -> None:
    requires = startup_requirements(load_compose())
    cycle = find_cycle(requires)
    assert cycle is None, "docker compose up would wait forever: " + describe(cycle)
    assert never_happen(requires) == set()


def test_init_waits_only_for_mongos_to_start() -> None:
    compose = load_compose()
    assert depends_on(compose["services"]["init"])["mongos"] == "service_started"
    assert depends_on(compose["services"]["scalyproxy"]) == {"init": "service_completed_successfully"}


# --- the check fails on the mistakes it is for --------------------------------------------


def with_dependency(service: str, on: str, condition: str) -> dict[str, Any]:
    compose = copy.deepcopy(load_compose())
    compose["services"][service].setdefault("depends_on", {})[on] = {"condition": condition}
    return compose


def test_the_deadlock_of_issue_20_is_found() -> None:
    """The file as it was: init depended on mongos being healthy."""
    cycle = find_cycle(startup_requirements(with_dependency("init", "mongos", "service_healthy")))
    assert cycle is not None
    assert {("init", "started"), ("mongos", "healthy")} <= set(cycle)
    assert describe(cycle).startswith(f"{cycle[0][0]} {cycle[0][1]} -> ")


def test_other_waits_through_a_health_check_are_found() -> None:
    # mongos waiting for init to finish: init finishes only once mongos answers
    assert find_cycle(startup_requirements(with_dependency("mongos", "init", "service_completed_successfully")))
    # init waiting for the proxy's readiness, which needs mongos, which needs init
    assert find_cycle(startup_requirements(with_dependency("init", "scalyproxy", "service_healthy")))
    # a plain depends_on loop
    assert find_cycle(startup_requirements(with_dependency("configsvr", "scalyproxy", "service_started")))


def test_a_mongos_whose_config_set_nobody_initiates_is_reported() -> None:
    compose = copy.deepcopy(load_compose())
    argv = command_of(compose["services"]["init"])
    compose["services"]["init"]["command"] = [a for a in argv[1:] if not a.startswith("--config-server")]
    assert initiators(compose["services"], "cfg") == set()
    stuck = never_happen(startup_requirements(compose))
    assert {("mongos", "healthy"), ("init", "completed"), ("scalyproxy", "started")} <= stuck
    assert ("shard1", "healthy") not in stuck


def test_the_file_is_read_with_its_defaults() -> None:
    ports = load_compose()["services"]["scalyproxy"]["ports"]
    assert ports == ["27017:27017", "9216:9216"]
    published = load_compose(env={"SCALY_PROXY_PUBLISH": "127.0.0.1:", "SCALY_ADMIN_PUBLISH": "127.0.0.1:"})
    assert published["services"]["scalyproxy"]["ports"] == ["127.0.0.1::27017", "127.0.0.1::9216"]
