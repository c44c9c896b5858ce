"""The innermost interceptor: typed errors raised by handlers become gRPC statuses."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import structlog

from services.kit.errors import ServiceError, Unimplemented, abort, internal_status, to_status
from services.kit.interception import Context, MethodInfo, ScopedInterceptor


class ErrorMappingInterceptor(ScopedInterceptor):
    """`ServiceError` → its status with details; `NotImplementedError` (the
    generated servicer base) → UNIMPLEMENTED; anything else → INTERNAL with
    an incident id that is logged with the traceback and never sent."""

    def __init__(self) -> None:
        super().__init__()
        self._log = structlog.get_logger("bmc.errors")

    def applies_to(self, method: MethodInfo) -> bool:
        return not method.infrastructure

    @asynccontextmanager
    async def scope(self, method: MethodInfo, request: Any, context: Context) -> AsyncIterator[Any]:
        try:
            yield request
        except grpc.aio.AbortError:
            raise
        except ServiceError as error:
            await abort(context, to_status(error))
        except NotImplementedError:
            await abort(
                context,
                to_status(
                    Unimplemented(
                        f"{method.full_method} is not implemented yet",
                        reason="NOT_IMPLEMENTED",
                        metadata={"method": method.full_method},
                    )
                ),
            )
        except Exception:
            incident = uuid.uuid4().hex[:12]
            self._log.exception("unhandled error", method=method.full_method, incident=incident)
            await abort(context, internal_status(incident))
