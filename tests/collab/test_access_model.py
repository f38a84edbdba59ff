"""A model-based test of who may see what (hypothesis stateful), on `serve --workers 2` with Redis and
PostgreSQL: 3 users, 2 groups; random job creation, shares, unshares, member changes and links, some by
users who may not make them. After every step each user's access to each job and each link's access
equals a plain Python model of the rules, and no answer is ever a 5xx.

MyDB tables join the same machine: upload, save (SQL ``into``), share, unshare and delete, with each user's
access to each table (listing, download and SQL) checked against the model after every step.
"""

from __future__ import annotations

import itertools

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

USERS = ("mu0", "mu1", "mu2")
_RUN = itertools.count()


class AccessMachine(RuleBasedStateMachine):
    collab = None  # set by the test: the served Collab

    def __init__(self) -> None:
        super().__init__()
        c = self.collab
        self.people = {u: c.person(u) for u in USERS}
        run = next(_RUN)
        # two groups per example (fresh names: the server lives across examples), owned by mu0 and mu1
        self.groups = {f"g{run}a": "mu0", f"g{run}b": "mu1"}
        self.members = {g: {owner} for g, owner in self.groups.items()}  # the model
        for g, owner in self.groups.items():
            self.ok(self.people[owner].post("/groups", json={"name": g}), 201)
        self.jobs: dict[str, str] = {}  # job id -> owner
        self.shares: set[tuple[str, str]] = set()  # (job, group)
        self.links: dict[str, tuple[str, bool, str]] = {}  # link id -> (path, alive, owner)
        # MyDB (21-B): tables of this example, (owner, name) -> whether it exists now; their shares
        self.run = run
        self.tables: dict[tuple[str, str], bool] = {}
        self.table_shares: set[tuple[tuple[str, str], str]] = set()  # ((owner, name), group)

    # -- helpers --------------------------------------------------------------------------------
    @staticmethod
    def ok(r: httpx.Response, *expected: int) -> httpx.Response:
        assert r.status_code < 500, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
        if expected:
            assert r.status_code in expected, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
        return r

    def can_read(self, user: str, job: str) -> bool:
        return self.jobs[job] == user or any(user in self.members[g] for j, g in self.shares if j == job)

    @staticmethod
    def pick(items, k: int):  # type: ignore[no-untyped-def]
        items = sorted(items)
        return items[k % len(items)]

    # -- rules ----------------------------------------------------------------------------------
    @rule(user=st.sampled_from(USERS))
    def create_job(self, user: str) -> None:
        if len(self.jobs) < 4:
            self.jobs[self.collab.job(self.people[user])] = user

    @rule(g=st.integers(0, 1), user=st.sampled_from(USERS), role=st.sampled_from(["member", "admin"]))
    def add_member(self, g: int, user: str, role: str) -> None:
        group = self.pick(self.groups, g)
        owner = self.groups[group]
        r = self.ok(self.people[owner].put(f"/groups/{group}/members/{user}", json={"role": role}))
        if user == owner:
            assert r.status_code == 409  # the last owner cannot become an admin or member
        else:
            assert r.status_code == 200
            self.members[group].add(user)

    @rule(g=st.integers(0, 1), user=st.sampled_from(USERS), actor=st.sampled_from(USERS))
    def remove_member(self, g: int, user: str, actor: str) -> None:
        group = self.pick(self.groups, g)
        owner = self.groups[group]
        r = self.ok(self.people[actor].delete(f"/groups/{group}/members/{user}"))
        if actor not in self.members[group]:
            assert r.status_code == 404
        elif user == owner:
            assert r.status_code in (403, 409)  # nobody removes the last owner, not even themself
        elif user not in self.members[group]:
            assert r.status_code == 404
        elif actor in (owner, user):
            assert r.status_code == 200
            self.members[group].discard(user)
        else:
            assert r.status_code in (200, 403)  # an admin may remove; a member may not
            if r.status_code == 200:
                self.members[group].discard(user)

    @precondition(lambda self: self.jobs)
    @rule(j=st.integers(0, 99), g=st.integers(0, 1), actor=st.sampled_from(USERS))
    def share(self, j: int, g: int, actor: str) -> None:
        job, group = self.pick(self.jobs, j), self.pick(self.groups, g)
        r = self.ok(self.people[actor].put(f"/jobs/{job}/shares/{group}"))
        if self.jobs[job] != actor:
            assert r.status_code == (403 if self.can_read(actor, job) else 404)
        elif actor not in self.members[group]:
            assert r.status_code == 404
        else:
            assert r.status_code == 200
            self.shares.add((job, group))

    @precondition(lambda self: self.jobs)
    @rule(j=st.integers(0, 99), g=st.integers(0, 1))
    def unshare(self, j: int, g: int) -> None:
        job, group = self.pick(self.jobs, j), self.pick(self.groups, g)
        r = self.ok(self.people[self.jobs[job]].delete(f"/jobs/{job}/shares/{group}"))
        assert r.status_code == (200 if (job, group) in self.shares else 404)
        self.shares.discard((job, group))

    @precondition(lambda self: self.jobs)
    @rule(j=st.integers(0, 99), actor=st.sampled_from(USERS))
    def link(self, j: int, actor: str) -> None:
        job = self.pick(self.jobs, j)
        r = self.ok(self.people[actor].post(f"/jobs/{job}/links", json={"expires_in_hours": 1}))
        if self.jobs[job] == actor:
            assert r.status_code == 201
            self.links[r.json()["id"]] = (r.json()["path"], True, actor)
        else:
            assert r.status_code == (403 if self.can_read(actor, job) else 404)

    @precondition(lambda self: self.links)
    @rule(k=st.integers(0, 99), actor=st.sampled_from(USERS))
    def revoke(self, k: int, actor: str) -> None:
        link_id = self.pick(self.links, k)
        path, alive, owner = self.links[link_id]
        r = self.ok(self.people[actor].delete(f"/links/{link_id}"))
        assert r.status_code == (200 if actor == owner else 404)  # someone else's link: like an unknown id
        if actor == owner:
            self.links[link_id] = (path, False, owner)

    # -- MyDB tables (21-B) ---------------------------------------------------------------------------
    def can_read_table(self, user: str, table: tuple[str, str]) -> bool:
        return self.tables[table] and (
            table[0] == user or any(user in self.members[g] for t, g in self.table_shares if t == table)
        )

    def _made(self, owner: str, name: str, r: httpx.Response) -> None:
        assert r.status_code == 201, r.text
        if not self.tables.get((owner, name)):  # a new table (a replaced one keeps its shares)
            self.table_shares = {s for s in self.table_shares if s[0] != (owner, name)}
        self.tables[(owner, name)] = True

    @rule(user=st.sampled_from(USERS), k=st.integers(0, 1))
    def upload_table(self, user: str, k: int) -> None:
        name = f"t{self.run}x{k}"
        if len(self.tables) < 4 or (user, name) in self.tables:
            r = self.ok(self.people[user].put(f"/mydb/tables/{name}", content=f"v\n{k}\n",
                                              headers={"Content-Type": "text/csv"}))  # fmt: skip
            self._made(user, name, r)

    @rule(user=st.sampled_from(USERS), k=st.integers(0, 1))
    def save_table(self, user: str, k: int) -> None:
        name = f"t{self.run}x{k}"
        if len(self.tables) < 4 or (user, name) in self.tables:
            r = self.ok(self.people[user].post("/mydb/sql", json={"sql": f"SELECT {k} AS v", "into": name}))
            self._made(user, name, r)

    @precondition(lambda self: self.tables)
    @rule(t=st.integers(0, 99), g=st.integers(0, 1), actor=st.sampled_from(USERS))
    def share_table(self, t: int, g: int, actor: str) -> None:
        table, group = self.pick(self.tables, t), self.pick(self.groups, g)
        r = self.ok(self.people[actor].put(f"/mydb/tables/{table[0]}.{table[1]}/shares/{group}"))
        if table[0] != actor or not self.tables[table]:
            assert r.status_code == (403 if self.can_read_table(actor, table) else 404), r.text
        elif actor not in self.members[group]:
            assert r.status_code == 404, r.text
        else:
            assert r.status_code == 200, r.text
            self.table_shares.add((table, group))

    @precondition(lambda self: self.tables)
    @rule(t=st.integers(0, 99), g=st.integers(0, 1))
    def unshare_table(self, t: int, g: int) -> None:
        table, group = self.pick(self.tables, t), self.pick(self.groups, g)
        r = self.ok(self.people[table[0]].delete(f"/mydb/tables/{table[1]}/shares/{group}"))
        assert r.status_code == (200 if (table, group) in self.table_shares else 404), r.text
        self.table_shares.discard((table, group))

    @precondition(lambda self: self.tables)
    @rule(t=st.integers(0, 99), actor=st.sampled_from(USERS))
    def delete_table(self, t: int, actor: str) -> None:
        table = self.pick(self.tables, t)
        r = self.ok(self.people[actor].delete(f"/mydb/tables/{table[0]}.{table[1]}"))
        if actor == table[0] and self.tables[table]:
            assert r.status_code == 200, r.text
            self.tables[table] = False
            self.table_shares = {s for s in self.table_shares if s[0] != table}
        else:
            assert r.status_code == (403 if self.can_read_table(actor, table) else 404), r.text

    @invariant()
    def tables_match_the_model(self) -> None:
        for user, person in self.people.items():
            listed = {(t["owner"], t["name"]) for t in self.ok(person.get("/mydb/tables"), 200).json()["tables"]
                      if t["name"].startswith(f"t{self.run}x")}  # fmt: skip
            for table in self.tables:
                want = self.can_read_table(user, table)
                assert (table in listed) == want, (user, table, listed, self.members, self.table_shares)
                r = self.ok(
                    person.get(f"/mydb/tables/{table[0]}.{table[1]}", params={"format": "json"}), 200, 404
                )
                assert (r.status_code == 200) == want, (user, table, self.members, self.table_shares)
                q = self.ok(
                    person.post("/mydb/sql", json={"sql": f"SELECT v FROM {table[0]}.{table[1]}"}), 200, 422
                )
                assert (q.status_code == 200) == want, (user, table, q.text)

    # -- what must hold after every step -----------------------------------------------------------
    @invariant()
    def access_matches_the_model(self) -> None:
        for user, person in self.people.items():
            listed = {
                j["id"] for j in self.ok(person.get("/jobs", params={"shared": "true"}), 200).json()["jobs"]
            }
            for job in self.jobs:
                want = self.can_read(user, job)
                r = self.ok(person.get(f"/jobs/{job}/files/result.bin"), 200, 404)
                assert (r.status_code == 200) == want, (user, job, self.members, self.shares)
                assert (job in listed) == want, (user, job, listed)
        with httpx.Client(base_url=self.collab.url, timeout=60) as anon:  # no token: link paths are absolute
            for path, alive, _ in self.links.values():
                assert self.ok(anon.get(path + "/files/result.bin")).status_code == (200 if alive else 404)

    def teardown(self) -> None:
        for group, owner in self.groups.items():
            self.ok(self.people[owner].delete(f"/groups/{group}"), 200)


def test_access_equals_the_model(collab_workers) -> None:
    AccessMachine.collab = collab_workers
    run_state_machine_as_test(
        AccessMachine,
        settings=settings(
            max_examples=8, stateful_step_count=10, deadline=None, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )  # fmt: skip
