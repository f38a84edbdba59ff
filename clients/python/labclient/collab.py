"""Working together: who you are (``lab.me()``), groups (``lab.groups``), and your download links.

Sharing a job is on the job: ``job.share("group")``, ``job.unshare("group")``, ``job.link(hours=24)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from labclient.lab import Lab

GROUPS = "/api/v1/groups"


def _q(part: str) -> str:
    return quote(str(part), safe="")


class Groups:
    """Your groups (roles as in SciServer: owner, admin, member).

    >>> lab.groups.create("turbulence", "channel-flow people")
    >>> lab.groups.add("turbulence", "bob")             # as a member; role="admin" to let bob add others
    >>> lab.groups.list()
    """

    def __init__(self, lab: Lab) -> None:
        self.lab = lab

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        return self.lab.transport.call(method, path, binary=False, **kw)

    def list(self) -> list[dict[str, Any]]:
        """The groups you are in, with your role in each."""
        return self._call("GET", GROUPS)["groups"]

    def get(self, name: str) -> dict[str, Any]:
        """One of your groups with its members and their roles."""
        return self._call("GET", f"{GROUPS}/{_q(name)}")

    def create(self, name: str, description: str = "") -> dict[str, Any]:
        """Create a group; you become its owner."""
        return self._call("POST", GROUPS, body={"name": name, "description": description}, idempotent=False)

    def add(self, group: str, user: str, role: str = "member") -> dict[str, Any]:
        """Add a user to a group, or change their role (owners and admins)."""
        return self._call("PUT", f"{GROUPS}/{_q(group)}/members/{_q(user)}", body={"role": role})

    def remove(self, group: str, user: str) -> dict[str, Any]:
        """Remove a member; your own name leaves the group."""
        return self._call("DELETE", f"{GROUPS}/{_q(group)}/members/{_q(user)}")

    def delete(self, name: str) -> dict[str, Any]:
        """Delete a group (owners only); its shares go with it."""
        return self._call("DELETE", f"{GROUPS}/{_q(name)}")

    def __iter__(self) -> Any:
        return iter(self.list())

    def __repr__(self) -> str:
        return f"<Groups of {self.lab.url}>"


def me(lab: Lab) -> dict[str, Any]:
    """``GET /api/v1/me``: your user, this token, your groups and roles, your limits and your usage."""
    return lab.transport.call("GET", "/api/v1/me", binary=False)


def links(lab: Lab) -> list[dict[str, Any]]:
    """Your download links (never their secrets)."""
    return lab.transport.call("GET", "/api/v1/links", binary=False)["links"]


def revoke_link(lab: Lab, link_id: str) -> dict[str, Any]:
    """Revoke a link: it stops working at once."""
    return lab.transport.call("DELETE", f"/api/v1/links/{_q(link_id)}", binary=False)
