"""Groups with SciServer's roles (owner, admin, member): ``/api/v1/groups``. The rules are in
:mod:`labservice.sharing`; this router only parses and answers."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from labservice.encoding import decode_body, parse_model, read_body
from labservice.routers.deps import AccessDep, SettingsDep, UserDep, body_of

router = APIRouter(tags=["groups"])


class GroupRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="Lower-case letters, digits, _ and -, starting with a letter.")
    description: str = Field(default="", max_length=1000)


class RoleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(default="member", description="owner, admin or member.")


async def _role_body(request: Request, settings: SettingsDep) -> RoleRequest:
    """``{role}``; no body at all means ``member``."""
    raw = await read_body(request, settings.max_body_bytes)
    return (
        RoleRequest()
        if not raw
        else parse_model(RoleRequest, decode_body(raw, request.headers.get("content-type")))
    )


@router.post(
    "/groups",
    status_code=201,
    operation_id="create_group",
    responses={409: {"description": "The name is taken."}},
)
async def create_group(
    caller: UserDep, access: AccessDep, body: Annotated[GroupRequest, body_of(GroupRequest)]
) -> dict[str, Any]:
    """Create a group; you become its owner."""
    return await run_in_threadpool(access.create_group, caller.user_id, body.name, body.description)


@router.get("/groups", operation_id="list_groups")
async def list_groups(caller: UserDep, access: AccessDep) -> dict[str, Any]:
    """The groups you are in, with your role."""
    return {"groups": await run_in_threadpool(access.list_groups, caller.user_id)}


@router.get("/groups/{name}", operation_id="get_group")
async def get_group(name: str, caller: UserDep, access: AccessDep) -> dict[str, Any]:
    """A group of yours with its members and their roles."""
    return await run_in_threadpool(access.group, caller.user_id, name)


@router.put(
    "/groups/{name}/members/{user}",
    operation_id="set_group_member",
    responses={409: {"description": "The last owner cannot be demoted."}},
    openapi_extra={  # the body is optional (no body: member), so it is parsed by _role_body
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": RoleRequest.model_json_schema()}},
        }
    },
)
async def set_member(
    name: str,
    user: str,
    caller: UserDep,
    access: AccessDep,
    body: Annotated[RoleRequest, Depends(_role_body)],
) -> dict[str, Any]:
    """Add a user or change their role (owners and admins)."""
    return await run_in_threadpool(access.set_member, caller.user_id, name, user, body.role)


@router.delete(
    "/groups/{name}/members/{user}",
    operation_id="remove_group_member",
    responses={409: {"description": "The last owner cannot leave."}},
)
async def remove_member(name: str, user: str, caller: UserDep, access: AccessDep) -> dict[str, Any]:
    """Remove a member, or leave (your own name). The last owner cannot leave."""
    return await run_in_threadpool(access.remove_member, caller.user_id, name, user)


@router.delete("/groups/{name}", operation_id="delete_group")
async def delete_group(name: str, caller: UserDep, access: AccessDep) -> dict[str, Any]:
    """Delete a group with its shares (owners only)."""
    await run_in_threadpool(access.delete_group, caller.user_id, name)
    return {"name": name, "deleted": True}
