# Copyright: ferry.docker contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Dependency groups: which containers move together, in which order, and how their references
are rewritten for the target."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ansible_collections.ferry.docker.plugins.module_utils import _groups as g


def cid(name):
    return hashlib.sha256(name.encode()).hexdigest()


def container(name, network_mode="default", ipc="private", pid="", volumes_from=(), links=(), labels=None, volumes=()):
    return {
        "Id": cid(name),
        "Name": "/" + name,
        "Config": {"Labels": dict(labels or {})},
        "HostConfig": {
            "NetworkMode": network_mode,
            "IpcMode": ipc,
            "PidMode": pid,
            "VolumesFrom": list(volumes_from) or None,
            "Links": list(links) or None,
        },
        "Mounts": [{"Type": "volume", "Name": v, "Destination": "/" + v} for v in volumes],
        "NetworkSettings": {"Networks": {}},
    }


def compose(name, project, service, depends_on=""):
    labels = {g.COMPOSE_PROJECT: project, g.COMPOSE_SERVICE: service}
    if depends_on:
        labels[g.COMPOSE_DEPENDS_ON] = depends_on
    return container(name, labels=labels)


SIDECAR_HOST = [
    container("main", volumes=["data"]),
    container("sidecar", network_mode="container:" + cid("main"), volumes_from=["main:ro"]),
    container("other", volumes=["data"]),
]


def test_references_of_every_kind():
    doc = container(
        "web",
        network_mode="container:" + cid("net"),
        ipc="container:ipc",
        pid="container:pid",
        volumes_from=["files:ro"],
        links=["/db:/web/db"],
    )
    doc["NetworkSettings"]["Networks"]["app"] = {"Links": ["cache:c"]}
    kinds = [(kind, ref) for kind, ref, _detail in g.references(doc)]
    assert kinds == [
        ("network_mode", cid("net")),
        ("ipc_mode", "ipc"),
        ("pid_mode", "pid"),
        ("volumes_from", "files"),
        ("links", "/db"),
        ("links", "cache"),
    ]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("main", "main"),
        ("/main", "main"),
        (cid("main"), "main"),
        (cid("main")[:12], "main"),
        ("nope", None),
        ("", None),
    ],
)
def test_index_resolves_names_and_ids(reference, expected):
    found = g.Index(SIDECAR_HOST).resolve(reference)
    assert (g.container_name(found) if found else None) == expected


def test_index_refuses_an_ambiguous_short_id():
    a, b = container("a"), container("b")
    a["Id"], b["Id"] = "abcd1" + "0" * 59, "abcd2" + "0" * 59
    assert g.Index([a, b]).resolve("abcd") is None
    assert g.container_name(g.Index([a, b]).resolve("abcd1")) == "a"


@pytest.mark.parametrize("asked", [["main"], ["sidecar"], ["sidecar", "main"]])
def test_a_sidecar_pair_moves_together_whichever_member_is_named(asked):
    (group,) = g.plan(SIDECAR_HOST, asked)
    assert group.members == ["main", "sidecar"]  # main starts first
    assert g.stop_order(group) == ["sidecar", "main"]
    assert group.pulled_in == sorted({"main", "sidecar"} - set(asked))
    assert {edge.kind for edge in group.edges} == {"network_mode", "volumes_from"}


def test_without_dependencies_the_missing_members_are_named():
    with pytest.raises(g.PlanError, match=r"sidecar cannot move without main .*migrate_with_dependencies"):
        g.plan(SIDECAR_HOST, ["sidecar"], with_dependencies=False)
    (group,) = g.plan(SIDECAR_HOST, ["main", "sidecar"], with_dependencies=False)
    assert group.pulled_in == []


def test_an_unrelated_container_sharing_a_volume_is_not_pulled_in():
    groups = g.plan(SIDECAR_HOST, ["main", "other"])
    assert [group.members for group in groups] == [["main", "sidecar"], ["other"]]


def test_compose_project_orders_by_depends_on():
    host = [
        compose("shop-web-1", "shop", "web", "api:service_started:false"),
        compose("shop-api-1", "shop", "api", "db:service_healthy:true,cache:service_started:false"),
        compose("shop-db-1", "shop", "db"),
        compose("shop-cache-1", "shop", "cache"),
        compose("blog-web-1", "blog", "web"),
    ]
    (group,) = g.plan(host, ["shop-web-1"])
    assert group.members == ["shop-cache-1", "shop-db-1", "shop-api-1", "shop-web-1"]
    assert group.pulled_in == ["shop-api-1", "shop-cache-1", "shop-db-1"]


def test_compose_project_without_depends_on_still_moves_together():
    host = [compose("p-b-1", "p", "b"), compose("p-a-1", "p", "a", "b"), compose("q-a-1", "q", "a")]
    (group,) = g.plan(host, ["p-b-1"])
    assert group.members == ["p-b-1", "p-a-1"]  # old-style depends_on "b" orders too


def test_a_cycle_is_refused_with_the_cycle_named():
    host = [compose("a", "p", "a", "b"), compose("b", "p", "b", "c"), compose("c", "p", "c", "a")]
    with pytest.raises(g.PlanError, match=r"cycle.*a -> b -> c -> a"):
        g.plan(host, ["a"])


def test_unknown_and_dangling_references_are_named():
    host = [container("web", volumes_from=["gone"])]
    with pytest.raises(g.PlanError) as failure:
        g.plan(host, ["web", "ghost"])
    assert "ghost: no such container on the source" in str(failure.value)
    assert "web: VolumesFrom=gone names a container that does not exist" in str(failure.value)


def test_shared_volumes_are_listed_once_per_group():
    host = [container("a", volumes=["v", "only-a"]), container("b", links=["/a:/b/a"], volumes=["v"])]
    (group,) = g.plan(host, ["b"])
    assert group.shared_volumes == {"v": ["a", "b"]}


@st.composite
def dags(draw):
    """A random DAG over up to 8 containers: each may depend on any container before it."""
    count = draw(st.integers(min_value=1, max_value=8))
    names = [f"c{i}" for i in range(count)]
    host, deps = [], {}
    for i, name in enumerate(names):
        chosen = draw(st.lists(st.sampled_from(names[:i]), unique=True, max_size=3)) if i else []
        deps[name] = chosen
        host.append(container(name, volumes_from=chosen))
    return host, deps


@given(dags(), st.randoms())
def test_every_member_starts_after_what_it_depends_on(dag, random):
    host, deps = dag
    random.shuffle(host)
    asked = [g.container_name(host[0])]
    (group,) = g.plan(host, asked)
    position = {name: i for i, name in enumerate(group.members)}
    for name in group.members:
        for dependency in deps[name]:
            assert position[dependency] < position[name]
    assert g.plan(list(reversed(host)), asked) == [group]  # the same plan whatever the listing order


@given(st.integers(min_value=2, max_value=7))
def test_every_cycle_is_refused(length):
    names = [f"c{i}" for i in range(length)]
    host = [container(name, links=[f"/{names[(i + 1) % length]}:/{name}/x"]) for i, name in enumerate(names)]
    with pytest.raises(g.PlanError, match="cycle"):
        g.plan(host, [names[0]])


def test_rewrite_references_follows_the_name_map():
    index = g.Index([*SIDECAR_HOST, container("db")])
    body = {
        "HostConfig": {
            "NetworkMode": "container:" + cid("main"),
            "IpcMode": "container:main",
            "VolumesFrom": ["main:ro", "db"],
            "Links": ["/db:/sidecar/database"],
        }
    }
    changed = g.rewrite_references(body, {"main": "main-new"}, index)
    assert body["HostConfig"] == {
        "NetworkMode": "container:main-new",
        "IpcMode": "container:main-new",
        "VolumesFrom": ["main-new:ro", "db"],
        "Links": ["db:database"],
    }
    assert changed[0] == f"NetworkMode: container:{cid('main')} -> container:main-new"
    assert len(changed) == 4


def test_drop_shared_network_settings_only_for_container_network_mode():
    body = {
        "Hostname": "abc123",
        "Domainname": "",
        "ExposedPorts": {"80/tcp": {}},
        "HostConfig": {
            "NetworkMode": "container:main",
            "PortBindings": {"80/tcp": [{}]},
            "Dns": [],
            "ExtraHosts": ["a:1"],
        },
        "NetworkingConfig": {"EndpointsConfig": {"x": {}}},
    }
    assert g.drop_shared_network_settings(body) == [
        "ExposedPorts",
        "HostConfig.ExtraHosts",
        "HostConfig.PortBindings",
        "Hostname",
        "NetworkingConfig",
    ]
    assert body == {"HostConfig": {"NetworkMode": "container:main"}}
    plain = {"Hostname": "web", "HostConfig": {"NetworkMode": "bridge", "PortBindings": {"80/tcp": [{}]}}}
    assert g.drop_shared_network_settings(plain) == []
    assert plain["Hostname"] == "web"
