"""Extractions kept for review (the uploaded files are not kept)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from bmc.ocr.v1 import ocr_pb2
from services.kit.database import PooledStore
from services.kit.sql import Where


class ExtractionStore(PooledStore):
    async def save(self, extraction: ocr_pb2.Extraction) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO extractions VALUES ($1, $2, $3, $4, $5)",
                extraction.name.removeprefix("extractions/"),
                extraction.broker,
                extraction.sha256,
                extraction.SerializeToString(),
                extraction.create_time.ToDatetime(dt.UTC),
            )

    async def get(self, extraction_id: str, broker: str = "") -> ocr_pb2.Extraction | None:
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT extraction FROM extractions WHERE id = $1 AND ($2 = '' OR broker = $2)", extraction_id, broker
            )
        return ocr_pb2.Extraction.FromString(row["extraction"]) if row else None

    async def page(
        self, size: int, after: Sequence[Any] | None, broker: str
    ) -> list[tuple[ocr_pb2.Extraction, tuple[dt.datetime, str]]]:
        sql = Where()
        if broker:
            sql.add("broker = ?", broker)
        if after is not None:
            sql.add("(create_time, id) < (?, ?)", *after)
        rows = await self.select(
            sql, "SELECT * FROM extractions", f"ORDER BY create_time DESC, id DESC LIMIT {sql.bind(size)}"
        )
        return [(ocr_pb2.Extraction.FromString(r["extraction"]), (r["create_time"], r["id"])) for r in rows]
