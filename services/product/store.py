"""The catalog in PostgreSQL: point, batch and keyset-paged lookups, single
changes with history, and the chunk merge that bulk imports run."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.kit.errors import Aborted, AlreadyExists, FailedPrecondition, NotFound
from services.product.domain import ProductData

metadata = sa.MetaData()


def _content_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("category", sa.SmallInteger, nullable=False),
        sa.Column("subcategory", sa.Text, nullable=False),
        sa.Column("processing_level", sa.SmallInteger, nullable=False),
        sa.Column("unit_code", sa.Text, nullable=False),
        sa.Column("vat_treatment", sa.SmallInteger, nullable=False),
        sa.Column("withholding_class", sa.SmallInteger, nullable=False),
        sa.Column("eligible", sa.Boolean, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("change", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    ]


products = sa.Table("products", metadata, sa.Column("code", sa.Text, primary_key=True), *_content_columns())
product_history = sa.Table(
    "product_history", metadata, sa.Column("code", sa.Text, primary_key=True), *_content_columns()
)
# The distinct names, the only thing name search indexes with trigrams.
product_names = sa.Table("product_names", metadata, sa.Column("display_name", sa.Text, primary_key=True))
DATA_COLUMNS = ProductData._fields
_GET_MANY = "SELECT * FROM products WHERE code = ANY($1::text[])"
# What an import compares to decide "unchanged".
CONTENT_COLUMNS = tuple(c for c in DATA_COLUMNS if c != "code")


def secondary_indexes(table: str) -> dict[str, str]:
    """Statements that build the catalog's search indexes on `table` (`products`
    or a first load's table), by index name; as migration product_0002 has them."""
    return {
        f"{table}_name": f"CREATE INDEX IF NOT EXISTS {table}_name ON {table} (hashtextextended(display_name, 0))",
        f"{table}_category": f"CREATE INDEX IF NOT EXISTS {table}_category ON {table} (category, code)",
    }


def _name_hash(name: sa.ColumnElement[str]) -> sa.ColumnElement[int]:
    """The expression index `products_name` covers (PostgreSQL's own stable text hash)."""
    return sa.func.hashtextextended(name, 0)


async def remember_name(conn: AsyncConnection, name: str) -> None:
    """Makes `name` findable by name search (names are never forgotten: a
    name no product carries any more simply matches nothing)."""
    await conn.execute(pg_insert(product_names).values(display_name=name).on_conflict_do_nothing())


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
    def from_row(cls, row: Any) -> StoredProduct:
        """From a SQLAlchemy row or an asyncpg record."""
        m = getattr(row, "_mapping", row)
        return cls(
            data=ProductData(**{c: m[c] for c in DATA_COLUMNS}),
            eligible=m["eligible"],
            active=m["active"],
            revision=m["revision"],
            change=m["change"],
            actor=m["actor"],
            create_time=m["create_time"],
            update_time=m["update_time"],
        )


@dataclass(frozen=True)
class ListQuery:
    code_prefix: str = ""
    name_query: str = ""
    category: int = 0
    eligible_only: bool = False
    show_inactive: bool = False


class CatalogStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get_many(self, codes: Sequence[str]) -> dict[str, StoredProduct]:
        """The hot path of every lookup miss: one prepared statement on the
        driver connection (asyncpg caches it), no SQL compilation per call."""
        if not codes:
            return {}
        async with self.engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            rows = await driver.fetch(_GET_MANY, list(codes))
        return {r["code"]: StoredProduct.from_row(r) for r in rows}

    async def get(self, code: str) -> StoredProduct | None:
        return (await self.get_many([code])).get(code)

    async def search(self, query: ListQuery, limit: int, after: list[Any] | None) -> list[tuple[StoredProduct, Any]]:
        """A page of products and each one's sort key (for the next token)."""
        statement = sa.select(products)
        if query.code_prefix:
            statement = statement.where(products.c.code.startswith(query.code_prefix, autoescape=True))
        if query.category:
            statement = statement.where(products.c.category == query.category)
        if query.eligible_only:
            statement = statement.where(products.c.eligible)
        if not query.show_inactive:
            statement = statement.where(products.c.active)
        if query.name_query:
            matched = (
                sa.select(product_names.c.display_name)
                .where(product_names.c.display_name.op("%")(query.name_query))
                .subquery()
            )
            similarity = sa.func.similarity(matched.c.display_name, query.name_query)
            same_name = sa.and_(
                _name_hash(products.c.display_name) == _name_hash(matched.c.display_name),
                products.c.display_name == matched.c.display_name,
            )
            statement = statement.join(matched, same_name).add_columns(similarity.label("score"))
            if after is not None:
                score, code = float(after[0]), str(after[1])
                statement = statement.where(
                    sa.or_(similarity < score, sa.and_(similarity == score, products.c.code > code))
                )
            statement = statement.order_by(similarity.desc(), products.c.code)
        else:
            if after is not None:
                statement = statement.where(products.c.code > str(after[0]))
            statement = statement.order_by(products.c.code)
        async with self.engine.connect() as conn:
            if query.name_query:
                await conn.execute(sa.text("SET LOCAL pg_trgm.similarity_threshold = 0.2"))
            rows = (await conn.execute(statement.limit(limit))).all()
        page = []
        for row in rows:
            product = StoredProduct.from_row(row)
            key = [float(row.score), product.data.code] if query.name_query else [product.data.code]
            page.append((product, key))
        return page

    async def create(self, data: ProductData, actor: str) -> StoredProduct:
        values = {**data._asdict(), "eligible": data.eligible, "active": True, "revision": 1}
        statement = (
            pg_insert(products)
            .values(**values, change="create", actor=actor, create_time=sa.func.now(), update_time=sa.func.now())
            .on_conflict_do_nothing(index_elements=["code"])
            .returning(*products.c)
        )
        async with self.engine.begin() as conn:
            row = (await conn.execute(statement)).one_or_none()
            await remember_name(conn, data.display_name)
        if row is None:
            raise AlreadyExists(
                f"product {data.code!r} already exists", reason="PRODUCT_EXISTS", metadata={"code": data.code}
            )
        return StoredProduct.from_row(row)

    async def _change(
        self, conn: AsyncConnection, code: str, etag: str, values: dict[str, Any], change: str, actor: str
    ) -> StoredProduct:
        current = (
            await conn.execute(sa.select(products).where(products.c.code == code).with_for_update())
        ).one_or_none()
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
            sa.insert(product_history).from_select(
                [c.name for c in products.c], sa.select(products).where(products.c.code == code)
            )
        )
        row = (
            await conn.execute(
                sa.update(products)
                .where(products.c.code == code)
                .values(
                    **values, revision=products.c.revision + 1, change=change, actor=actor, update_time=sa.func.now()
                )
                .returning(*products.c)
            )
        ).one()
        return StoredProduct.from_row(row)

    async def update(self, data: ProductData, etag: str, actor: str) -> StoredProduct:
        values = {c: getattr(data, c) for c in CONTENT_COLUMNS} | {"eligible": data.eligible}
        async with self.engine.begin() as conn:
            await remember_name(conn, data.display_name)
            return await self._change(conn, data.code, etag, values, "update", actor)

    async def set_active(self, code: str, active: bool, etag: str, actor: str, reason: str = "") -> StoredProduct:
        async with self.engine.begin() as conn:
            current = await conn.execute(sa.select(products.c.active).where(products.c.code == code))
            state = current.scalar_one_or_none()
            if state is active:
                word = "active" if active else "inactive"
                raise FailedPrecondition(
                    f"product {code!r} is already {word}", reason=f"ALREADY_{word.upper()}", metadata={"code": code}
                )
            change = ("reactivate" if active else f"deactivate: {reason}").strip()
            return await self._change(conn, code, etag, {"active": active}, change, actor)

    async def history(self, code: str, limit: int, before_revision: int | None) -> list[StoredProduct]:
        """Versions of a product, newest first, the current one included."""
        current = sa.select(products).where(products.c.code == code)
        older = sa.select(product_history).where(product_history.c.code == code)
        union = sa.union_all(current, older).subquery()
        statement = sa.select(union).order_by(union.c.revision.desc()).limit(limit)
        if before_revision is not None:
            statement = statement.where(union.c.revision < before_revision)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [StoredProduct.from_row(r) for r in rows]

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(products))).scalar_one())
