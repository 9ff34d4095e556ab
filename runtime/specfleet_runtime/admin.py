"""GET/PUT /admin/speculation: the control plane's handle on a replica (DESIGN.md §3)."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from specfleet.contract import ADMIN_SPECULATION_PATH, SpeculationConfig, SpeculationUpdate
from specfleet_runtime.errors import describe

if TYPE_CHECKING:
    from specfleet_runtime.server import RuntimeState

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def admin_router(state: "RuntimeState", admin_token: str | None) -> APIRouter:
    """Both routes need `Authorization: Bearer <admin_token>`; with no token configured the
    admin API refuses everyone rather than being open."""
    bearer = HTTPBearer(auto_error=False, description="The replica's admin token.")

    def require_token(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if admin_token is None:
            raise HTTPException(401, "admin API disabled: no admin token configured", headers=UNAUTHORIZED)
        if credentials is None:
            raise HTTPException(401, "missing bearer token", headers=UNAUTHORIZED)
        if not hmac.compare_digest(credentials.credentials.encode(), admin_token.encode()):
            raise HTTPException(401, "wrong bearer token", headers=UNAUTHORIZED)

    router = APIRouter(dependencies=[Depends(require_token)], tags=["admin"])

    @router.get(ADMIN_SPECULATION_PATH, response_model=SpeculationConfig)
    async def get_speculation() -> SpeculationConfig:
        return state.require_engine().speculation

    @router.put(ADMIN_SPECULATION_PATH, response_model=SpeculationConfig)
    async def put_speculation(update: SpeculationUpdate) -> SpeculationConfig:
        engine = state.require_engine()
        try:
            # The engine may wait for its step lock: keep that off the event loop.
            return await run_in_threadpool(engine.update_speculation, update)
        except ValidationError as exc:  # the merged config is invalid: names the field/row
            raise HTTPException(422, describe(exc.errors())[0]) from exc
        except ValueError as exc:  # e.g. method draft on a replica without a draft model
            raise HTTPException(422, str(exc)) from exc

    return router
