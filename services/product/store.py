"""The catalog in PostgreSQL: point, batch and keyset-paged lookups, single
changes with history (`CatalogStore`), and the writes of bulk imports
(`ImportStore`): chunks merged through a staging table, or, in a first
load of an empty catalog, copied into a table that is indexed once and
swapped in.

Merging rows one by one into an indexed table costs several times a plain
`COPY`; building a B-tree once from sorted rows costs a fraction of it. So
an import into an empty catalog `COPY`s its chunks into `products_load`, a
table without indexes (each chunk committed, so a killed import resumes
where it stopped), then builds the primary key and search indexes once and
swaps the table in for `products` in one short transaction. Until the swap
the catalog stays as it was: empty, and answering. Writes made through the
API during the load are kept and win over the loaded rows.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from services.kit.database import PooledStore
from services.kit.errors import Aborted, AlreadyExists, FailedPrecondition, NotFound
from services.product.domain import DATA_FIELDS, ProductData
from services.product.parsing import Chunk

log = structlog.get_logger("bmc.product.store")

DATA_COLUMNS = ProductData._fields
# What an import compares to decide "unchanged".
CONTENT_COLUMNS = tuple(c for c in DATA_COLUMNS if c != "code")
# Every column of `products` and `product_history`, in table order (migration product_0001).
COLUMNS = (
    "code", "display_name", "description", "category", "subcategory", "processing_level", "unit_code",
    "vat_treatment", "withholding_class", "eligible", "active", "revision", "change", "actor", "create_time",
    "update_time",
)  # fmt: skip
_COLUMN_LIST = ", ".join(COLUMNS)
_GET_MANY = "SELECT * FROM products WHERE code = ANY($1::text[])"
_REMEMBER_NAME = "INSERT INTO product_names VALUES ($1) ON CONFLICT DO NOTHING"


def secondary_indexes(table: str) -> dict[str, str]:
    """Statements that build the catalog's search indexes on `table` (`products`
    or a first load's table), by index name; as migration product_0002 has them."""
    return {
        f"{table}_name": f"CREATE INDEX IF NOT EXISTS {table}_name ON {table} (hashtextextended(display_name, 0))",
        f"{table}_category": f"CREATE INDEX IF NOT EXISTS {table}_category ON {table} (category, code)",
    }


@dataclass(frozen=True)
class StoredProduct:
    """A catalog row."""

    data: ProductData
    eligible: bool
    active: bool
    revision: int
    change: str
    actor: str
    create_time: dt.datetime
    update_time: dt.datetime

    @property
    def etag(self) -> str:
        return f'W/"{self.revision}"'

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> StoredProduct:
        return cls(
            data=ProductData(**{c: row[c] for c in DATA_COLUMNS}),
            eligible=row["eligible"],
            active=row["active"],
            revision=row["revision"],
            change=row["change"],
            actor=row["actor"],
            create_time=row["create_time"],
            update_time=row["update_time"],
        )


@dataclass(frozen=True)
class ListQuery:
    code_prefix: str = ""
    name_query: str = ""
    category: int = 0
    eligible_only: bool = False
    show_inactive: bool = False


def _like_prefix(prefix: str) -> str:
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


class CatalogStore(PooledStore):
    async def get_many(self, codes: Sequence[str]) -> dict[str, StoredProduct]:
        """The hot path of every lookup miss: one prepared statement (asyncpg caches it)."""
        if not codes:
            return {}
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(_GET_MANY, list(codes))
        return {r["code"]: StoredProduct.from_row(r) for r in rows}

    async def get(self, code: str) -> StoredProduct | None:
        return (await self.get_many([code])).get(code)

    async def search(
        self, limit: int, after: Sequence[Any] | None, query: ListQuery
    ) -> list[tuple[StoredProduct, tuple[Any, ...]]]:
        """A page of products and each one's sort key: (code), or by name
        (similarity, code)."""
        conditions, args = [], []

        def bind(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if query.code_prefix:
            conditions.append(f"p.code LIKE {bind(_like_prefix(query.code_prefix))}")
        if query.category:
            conditions.append(f"p.category = {bind(query.category)}")
        if query.eligible_only:
            conditions.append("p.eligible")
        if not query.show_inactive:
            conditions.append("p.active")
        if query.name_query:
            name = bind(query.name_query)
            # Distinct names matched by trigram, joined back through the name hash index.
            source = (
                f"products p JOIN (SELECT display_name, similarity(display_name, {name}) AS score "  # noqa: S608
                f"FROM product_names WHERE display_name % {name}) m "
                "ON hashtextextended(p.display_name, 0) = hashtextextended(m.display_name, 0) "
                "AND p.display_name = m.display_name"
            )
            if after is not None:
                score, code = bind(after[0]), bind(after[1])
                conditions.append(f"(m.score < {score} OR (m.score = {score} AND p.code > {code}))")
            order = "m.score DESC, p.code"
            columns = "p.*, m.score"
        else:
            source = "products p"
            if after is not None:
                conditions.append(f"p.code > {bind(after[0])}")
            order = "p.code"
            columns = "p.*"
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        sql = f"SELECT {columns} FROM {source} {where} ORDER BY {order} LIMIT {bind(limit)}"  # noqa: S608 - fixed fragments
        async with self.pool.acquire() as conn, conn.transaction():
            if query.name_query:
                await conn.execute("SET LOCAL pg_trgm.similarity_threshold = 0.2")
            rows = await conn.fetch(sql, *args)
        page = []
        for row in rows:
            product = StoredProduct.from_row(row)
            key = (float(row["score"]), product.data.code) if query.name_query else (product.data.code,)
            page.append((product, key))
        return page

    async def create(self, data: ProductData, actor: str) -> StoredProduct:
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"INSERT INTO products ({_COLUMN_LIST}) "  # noqa: S608 - fixed column list
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, true, 1, 'create', $11, now(), now()) "
                "ON CONFLICT (code) DO NOTHING RETURNING *",
                data.code, data.display_name, data.description, data.category, data.subcategory,
                data.processing_level, data.unit_code, data.vat_treatment, data.withholding_class, data.eligible,
                actor,
            )  # fmt: skip
            await conn.execute(_REMEMBER_NAME, data.display_name)
        if row is None:
            raise AlreadyExists(
                f"product {data.code!r} already exists", reason="PRODUCT_EXISTS", metadata={"code": data.code}
            )
        return StoredProduct.from_row(row)

    async def _change(
        self, conn: asyncpg.Connection, code: str, etag: str, values: dict[str, Any], change: str, actor: str
    ) -> StoredProduct:
        current = await conn.fetchrow("SELECT * FROM products WHERE code = $1 FOR UPDATE", code)
        if current is None:
            raise NotFound(f"product {code!r} not found", reason="PRODUCT_NOT_FOUND", metadata={"code": code})
        stored = StoredProduct.from_row(current)
        if etag and etag != stored.etag:
            raise Aborted(
                f"product {code!r} changed since it was read (etag {etag}, now {stored.etag})",
                reason="ETAG_MISMATCH",
                metadata={"current_etag": stored.etag},
            )
        await conn.execute(
            f"INSERT INTO product_history ({_COLUMN_LIST}) SELECT {_COLUMN_LIST} FROM products WHERE code = $1",  # noqa: S608
            code,
        )
        names = list(values)  # column names from the caller's fixed set, never from input
        assignments = ", ".join(f"{column} = ${index}" for index, column in enumerate(names, start=4))
        row = await conn.fetchrow(
            f"UPDATE products SET {assignments}, revision = revision + 1, change = $2, actor = $3, "  # noqa: S608
            "update_time = now() WHERE code = $1 RETURNING *",
            code, change, actor, *values.values(),
        )  # fmt: skip
        return StoredProduct.from_row(row)

    async def update(self, data: ProductData, etag: str, actor: str) -> StoredProduct:
        values = {c: getattr(data, c) for c in CONTENT_COLUMNS} | {"eligible": data.eligible}
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(_REMEMBER_NAME, data.display_name)
            return await self._change(conn, data.code, etag, values, "update", actor)

    async def set_active(self, code: str, active: bool, etag: str, actor: str, reason: str = "") -> StoredProduct:
        async with self.pool.acquire() as conn, conn.transaction():
            state = await conn.fetchval("SELECT active FROM products WHERE code = $1", code)
            if state is active:
                word = "active" if active else "inactive"
                raise FailedPrecondition(
                    f"product {code!r} is already {word}", reason=f"ALREADY_{word.upper()}", metadata={"code": code}
                )
            change = ("reactivate" if active else f"deactivate: {reason}").strip()
            return await self._change(conn, code, etag, {"active": active}, change, actor)

    async def history(
        self, limit: int, after: Sequence[int] | None, code: str
    ) -> list[tuple[StoredProduct, tuple[int]]]:
        """Versions of a product, newest first (older than the revision
        `after` holds), the current one included, each with its sort key."""
        before_revision = after[0] if after else None
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT * FROM (SELECT {_COLUMN_LIST} FROM products WHERE code = $1 "  # noqa: S608
                f"UNION ALL SELECT {_COLUMN_LIST} FROM product_history WHERE code = $1) v "
                "WHERE $2::bigint IS NULL OR revision < $2 ORDER BY revision DESC LIMIT $3",
                code, before_revision, limit,
            )  # fmt: skip
        return [(StoredProduct.from_row(r), (r["revision"],)) for r in rows]

    async def count(self) -> int:
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM products"))


# ---------------------------------------------------------------- bulk imports

FILE_DONE = -1  # chunk_index marking a whole file as committed
STAGING_COLUMNS = ("line", *DATA_FIELDS, "eligible")
TEXT_COLUMNS = ("code", "display_name", "description", "subcategory", "unit_code")
_COMPARED = [c for c in (*DATA_FIELDS, "eligible") if c != "code"]

STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS import_staging (
    line bigint, code text COLLATE "C", display_name text, category smallint,
    processing_level smallint, description text, subcategory text, unit_code text,
    vat_treatment smallint, withholding_class smallint, eligible boolean
) ON COMMIT DELETE ROWS
"""
_current = ", ".join(f"p.{c}" for c in _COMPARED)
_existing = ", ".join(f"products.{c}" for c in _COMPARED)
_staged = ", ".join(f"s.{c}" for c in _COMPARED)
_excluded = ", ".join(f"EXCLUDED.{c}" for c in _COMPARED)
# Built from the fixed column list above, never from input. Rows equal to
# the catalog's are filtered out by a read before the upsert: `ON CONFLICT DO
# UPDATE ... WHERE` would lock (and so write) every row it compares, which
# made re-importing an unchanged export rewrite the whole table.
MERGE_SQL = f"""
WITH staged AS (
    SELECT DISTINCT ON (code) * FROM import_staging ORDER BY code, line DESC
), changed AS (
    SELECT s.*, p.code IS NOT NULL AS known FROM staged s LEFT JOIN products p USING (code)
    WHERE p.code IS NULL OR ({_current}) IS DISTINCT FROM ({_staged})
), names AS (
    INSERT INTO product_names SELECT DISTINCT display_name FROM changed ON CONFLICT DO NOTHING
), history AS (
    INSERT INTO product_history ({_COLUMN_LIST})
    SELECT {", ".join(f"p.{c}" for c in COLUMNS)} FROM products p JOIN changed s USING (code) WHERE s.known
), merged AS (
    INSERT INTO products (code, {", ".join(_COMPARED)}, active, revision, change, actor, create_time, update_time)
    SELECT code, {", ".join(_COMPARED)}, true, 1, $1, $2, now(), now() FROM changed
    ON CONFLICT (code) DO UPDATE SET
        {", ".join(f"{c} = EXCLUDED.{c}" for c in _COMPARED)},
        revision = products.revision + 1, change = EXCLUDED.change, actor = EXCLUDED.actor, update_time = now()
    WHERE ({_existing}) IS DISTINCT FROM ({_excluded})
    RETURNING code, (xmax = 0) AS inserted
)
SELECT count(*) FILTER (WHERE inserted) AS inserted,
       count(*) FILTER (WHERE NOT inserted) AS updated,
       coalesce(array_agg(code) FILTER (WHERE NOT inserted), '{{}}') AS updated_codes
FROM merged
"""  # noqa: S608

# Secondary indexes: a large import into a catalog that is not empty drops
# them (once its chunks turn out to rewrite most of their rows) and rebuilds
# them once at the end (sorted, in parallel), cheaper than maintaining them
# row by row; searches by name or category run unindexed meanwhile.
SECONDARY_INDEXES = secondary_indexes("products")
MAINTENANCE = "SET maintenance_work_mem = '512MB'; SET max_parallel_maintenance_workers = 2"
BULK_LOCK = 0x62756C6B  # one import at a time may run without indexes

LOAD_TABLE = "products_load"
# The columns of `products` (migration product_0001) up to `eligible`, in
# its order; the bookkeeping columns are added after the load with constant
# defaults, which PostgreSQL stores once instead of writing into every row.
_CREATE_LOAD = """
CREATE TABLE products_load (
    code text COLLATE "C" NOT NULL,
    display_name text NOT NULL,
    description text NOT NULL,
    category smallint NOT NULL,
    subcategory text NOT NULL,
    processing_level smallint NOT NULL,
    unit_code text NOT NULL,
    vat_treatment smallint NOT NULL,
    withholding_class smallint NOT NULL,
    eligible boolean NOT NULL
) WITH (autovacuum_enabled = false)
"""
# Rows arrive in the order of `ProductData` plus `eligible` (the reader's CSV).
LOAD_COLUMNS = (*DATA_FIELDS, "eligible")
_BOOKKEEPING = """
ALTER TABLE products_load
    ADD COLUMN IF NOT EXISTS active boolean NOT NULL DEFAULT true,
    ADD COLUMN IF NOT EXISTS revision bigint NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS change text NOT NULL DEFAULT {change},
    ADD COLUMN IF NOT EXISTS actor text NOT NULL DEFAULT {actor},
    ADD COLUMN IF NOT EXISTS create_time timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS update_time timestamptz NOT NULL DEFAULT now()
"""
# The defaults of `products` (migration product_0001), once the load's are no longer wanted.
_DEFAULTS = """
ALTER TABLE products
    ALTER COLUMN description SET DEFAULT '',
    ALTER COLUMN subcategory SET DEFAULT '',
    ALTER COLUMN unit_code SET DEFAULT '',
    ALTER COLUMN vat_treatment SET DEFAULT 0,
    ALTER COLUMN withholding_class SET DEFAULT 0,
    ALTER COLUMN change DROP DEFAULT,
    ALTER COLUMN actor SET DEFAULT '',
    RESET (autovacuum_enabled)
"""
LOAD_INDEXES = secondary_indexes(LOAD_TABLE)
_KEPT_WRITES = f"""
INSERT INTO products_load SELECT {_COLUMN_LIST} FROM products
ON CONFLICT (code) DO UPDATE SET
    ({", ".join(COLUMNS[1:])}) = ({", ".join(f"EXCLUDED.{c}" for c in COLUMNS[1:])})
"""  # noqa: S608


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class Counts:
    """What chunks did, as import_chunks records it."""

    rows_read: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    bytes_done: int = 0

    def add(self, other: Counts) -> None:
        for name in ("rows_read", "inserted", "updated", "unchanged", "rejected", "bytes_done"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


class ImportStore:
    """The writes of one import run, on the run's own connection (its
    staging table and session settings live there)."""

    def __init__(self, conn: asyncpg.Connection, operation: str) -> None:
        self.conn, self.operation = conn, operation

    async def prepare(self) -> None:
        await self.conn.execute(STAGING_DDL)

    # -------------------------------------------------------- modes and locks

    async def load_owner(self) -> str | None:
        """The operation whose first load `products_load` holds, if it exists."""
        if not await self.conn.fetchval("SELECT to_regclass('products_load') IS NOT NULL"):
            return None
        return str(
            await self.conn.fetchval("SELECT coalesce(obj_description('products_load'::regclass, 'pg_class'), '')")
        )

    async def lock_bulk(self, wait: bool) -> bool:
        if wait:
            await self.conn.execute("SELECT pg_advisory_lock($1)", BULK_LOCK)
            return True
        return bool(await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", BULK_LOCK))

    async def unlock_bulk(self) -> None:
        await self.conn.execute("SELECT pg_advisory_unlock($1)", BULK_LOCK)

    async def claim_first_load(self) -> bool:
        """Whether this operation loads the catalog as a first load: it
        already does (resuming), or the catalog is empty and no other load is pending."""
        current = await self.load_owner()
        if current is not None:
            return current == self.operation
        if await self.conn.fetchval("SELECT EXISTS (SELECT 1 FROM products)"):
            return False
        async with self.conn.transaction():
            await self.conn.execute(_CREATE_LOAD)
            await self.conn.execute(f"COMMENT ON TABLE products_load IS {_literal(self.operation)}")
        log.info("first load: rows go to products_load, indexed once at the end", operation=self.operation)
        return True

    async def catalog_rows(self) -> int:
        """The planner's estimate of the catalog's size."""
        value = await self.conn.fetchval("SELECT reltuples::bigint FROM pg_class WHERE relname = 'products'")
        return max(int(value or 0), 0)

    async def ensure_secondary_indexes(self) -> None:
        await self.conn.execute(MAINTENANCE)
        for statement in SECONDARY_INDEXES.values():
            await self.conn.execute(statement)

    async def drop_secondary_indexes(self) -> None:
        await self.conn.execute(f"DROP INDEX IF EXISTS {', '.join(SECONDARY_INDEXES)}")

    # -------------------------------------------------------- chunks

    async def committed(self) -> tuple[dict[int, set[int]], Counts]:
        """The chunks committed so far, by file, and their counts."""
        rows = await self.conn.fetch("SELECT * FROM import_chunks WHERE operation = $1", self.operation)
        done: dict[int, set[int]] = {}
        totals = Counts()
        for r in rows:
            done.setdefault(r["file_index"], set()).add(r["chunk_index"])
            totals.add(Counts(r["rows_read"], r["inserted"], r["updated"], r["unchanged"], r["rejected"], 0))
        return done, totals

    async def file_done(self, file_index: int, size: int) -> None:
        await self.conn.execute(
            "INSERT INTO import_chunks VALUES ($1, $2, $3, 0, 0, 0, 0, 0, $4) ON CONFLICT DO NOTHING",
            self.operation, file_index, FILE_DONE, size,
        )  # fmt: skip

    async def commit_chunk(self, chunk: Chunk, actor: str, first_load: bool) -> tuple[Counts, list[str]]:
        """Writes one chunk and its bookkeeping in one transaction: the counts,
        and the codes it updated (for the cache)."""
        inserted = updated = 0
        updated_codes: list[str] = []
        async with self.conn.transaction():
            if chunk.valid:
                table, columns = (LOAD_TABLE, LOAD_COLUMNS) if first_load else ("import_staging", STAGING_COLUMNS)
                await self.conn.copy_to_table(
                    table,
                    source=io.BytesIO(chunk.csv),
                    columns=columns,
                    format="csv",
                    force_not_null=TEXT_COLUMNS,  # an empty field is '', not NULL
                )
                if first_load:
                    inserted = chunk.valid  # duplicates are settled once, at the end
                else:
                    merged = await self.conn.fetchrow(MERGE_SQL, f"import {self.operation}", actor)
                    assert merged is not None
                    inserted, updated = merged["inserted"], merged["updated"]
                    updated_codes = list(merged["updated_codes"])
            if chunk.rejects:
                await self.conn.executemany(
                    "INSERT INTO import_rejects VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
                    [(self.operation, chunk.file_index, *reject) for reject in chunk.rejects],
                )
            counts = Counts(chunk.rows, inserted, updated, chunk.valid - inserted - updated, len(chunk.rejects))
            await self.conn.execute(
                "INSERT INTO import_chunks VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                self.operation, chunk.file_index, chunk.index, counts.rows_read, counts.inserted, counts.updated,
                counts.unchanged, counts.rejected, chunk.bytes_read,
            )  # fmt: skip
        return counts, updated_codes

    async def rejects(self) -> list[asyncpg.Record]:
        return list(
            await self.conn.fetch(
                "SELECT * FROM import_rejects WHERE operation = $1 ORDER BY file_index, line", self.operation
            )
        )

    # -------------------------------------------------------- the first load's end

    async def finish_first_load(self, actor: str) -> tuple[int, int]:
        """Settles duplicate codes, indexes the loaded table and swaps it in:
        (duplicate rows dropped, API writes kept)."""
        await self.conn.execute(MAINTENANCE)
        dropped = await self._settle_duplicates()
        if dropped:
            # A later row of the same code replaced an earlier one: counted as updated, as a merge would.
            await self.conn.execute(
                "INSERT INTO import_chunks VALUES ($1, -1, 0, 0, $2, $3, 0, 0, 0) ON CONFLICT DO NOTHING",
                self.operation, -dropped, dropped,
            )  # fmt: skip
        await self._index_load(f"import {self.operation}", actor)
        return dropped, await self._swap()

    async def _settle_duplicates(self) -> int:
        """Makes codes unique, keeping each code's last row (rows are only ever
        appended, and autovacuum is off, so physical order is load order);
        returns how many earlier rows were dropped."""
        conn = self.conn
        if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'products_load_pkey')"):
            return 0
        try:
            await conn.execute("ALTER TABLE products_load ADD CONSTRAINT products_load_pkey PRIMARY KEY (code)")
            return 0
        except asyncpg.UniqueViolationError:
            pass
        async with conn.transaction():
            status = await conn.execute(
                """
                DELETE FROM products_load WHERE ctid IN (
                    SELECT ctid FROM (
                        SELECT ctid, row_number() OVER (PARTITION BY code ORDER BY ctid DESC) AS rank
                        FROM products_load
                    ) ranked WHERE rank > 1
                )
                """
            )
            await conn.execute("ALTER TABLE products_load ADD CONSTRAINT products_load_pkey PRIMARY KEY (code)")
        return int(status.split()[-1])

    async def _index_load(self, change: str, actor: str) -> None:
        """Builds what the catalog needs on the loaded rows (idempotent)."""
        await self.conn.execute(_BOOKKEEPING.format(change=_literal(change), actor=_literal(actor)))
        for statement in LOAD_INDEXES.values():
            await self.conn.execute(statement)
        await self.conn.execute(
            "INSERT INTO product_names SELECT DISTINCT display_name FROM products_load ON CONFLICT DO NOTHING"
        )

    async def _swap(self) -> int:
        """Puts the loaded table in place of `products`, keeping rows written
        meanwhile through the API; returns how many there were."""
        conn = self.conn
        async with conn.transaction():
            await conn.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
            kept = await conn.execute(_KEPT_WRITES)
            await conn.execute("DROP TABLE products")
            await conn.execute("ALTER TABLE products_load RENAME TO products")
            await conn.execute("ALTER TABLE products RENAME CONSTRAINT products_load_pkey TO products_pkey")
            for name in LOAD_INDEXES:
                await conn.execute(f"ALTER INDEX {name} RENAME TO {name.replace('products_load_', 'products_')}")
            await conn.execute(_DEFAULTS)
            await conn.execute("COMMENT ON TABLE products IS NULL")
        await conn.execute("ANALYZE products")
        return int(kept.split()[-1])
