"""The caller as a user: ``GET /api/v1/me`` and their own tokens (``/api/v1/me/tokens``). No passwords."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from labservice.routers.deps import AccessDep, TokensDep, UserDep, body_of
from labservice.users import UserStore

router = APIRouter(tags=["users"])


class TokenRequest(BaseModel):
    """A token for yourself: at most your own token's scopes, limits and lifetime."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200, description="What the token is for, e.g. 'laptop'.")
    scopes: list[str] | str | None = Field(
        default=None, description="Some of read, jobs, mydb, share; default: yours."
    )
    expires_in_hours: float | None = Field(default=None, description="Lifetime; default: as long as yours.")
    limits: dict[str, int | bool] | None = Field(
        default=None, description="Lower limits than yours, by name."
    )


def _usage(request: Request, token_ids: set[str]) -> dict[str, int]:
    engine = getattr(request.app.state, "jobs", None)
    running = scratch = 0
    if engine is not None:
        for token_id in token_ids:
            active, used = engine.registry.usage(token_id)
            running, scratch = running + active, scratch + used
    return {"running_jobs": running, "scratch_bytes": scratch}


@router.get("/me", operation_id="me")
async def me(request: Request, caller: UserDep, access: AccessDep) -> dict[str, Any]:
    """Who you are: your user, this token, your groups with roles, your limits and your usage."""

    def build() -> dict[str, Any]:
        user = UserStore(access.db.url).by_id(caller.user_id)  # type: ignore[arg-type]
        usage = {**access.usage(user.id), **_usage(request, access.token_ids(user.id))}
        groups = access.groups_of(user.id)
        return {
            "user": user.name,
            "admin": user.admin,
            "token": {"id": caller.token_id, "name": caller.name, "scopes": sorted(caller.scopes)},
            "groups": [{"name": g, "role": r} for g, r in sorted(groups.items())],
            "limits": {
                **caller.limits.as_dict(),
                **user.limits.as_dict(),
                "mydb_bytes": user.limits.mydb_bytes,
            },
            "usage": usage,
        }

    return await run_in_threadpool(build)


@router.get("/me/tokens", operation_id="my_tokens")
async def my_tokens(caller: UserDep, tokens: TokensDep) -> dict[str, Any]:
    """Your tokens (never their secrets): id, name, scopes, expiry, limits, revoked."""
    recs = await run_in_threadpool(tokens.list, caller.user_id)
    return {"tokens": [{**r.public(), "current": r.id == caller.token_id} for r in recs]}


@router.post(
    "/me/tokens",
    status_code=201,
    operation_id="create_my_token",
    responses={409: {"description": "Your tokens quota is full; revoke one."}},
)
async def create_my_token(
    caller: UserDep,
    tokens: TokensDep,
    access: AccessDep,
    body: Annotated[TokenRequest, body_of(TokenRequest)],
) -> dict[str, Any]:
    """Make a token for yourself; the token is shown once, in this answer."""

    def make() -> dict[str, Any]:
        user = UserStore(access.db.url).by_id(caller.user_id)  # type: ignore[arg-type]
        rec, token = tokens.create_own(
            caller, body.name, body.scopes, body.expires_in_hours, body.limits, user.limits.max_tokens
        )
        return {**rec.public(), "token": token}

    return await run_in_threadpool(make)


@router.delete("/me/tokens/{token_id}", operation_id="revoke_my_token")
async def revoke_my_token(token_id: str, caller: UserDep, tokens: TokensDep) -> dict[str, Any]:
    """Revoke one of your tokens (on every worker within half a second)."""
    await run_in_threadpool(tokens.revoke, token_id, caller.user_id)
    return {"id": token_id, "revoked": True}
