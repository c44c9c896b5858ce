"""The first load of an empty catalog (the migration out of Google Cloud).

Merging rows one by one into an indexed table costs several times a plain
`COPY`; building a B-tree once from sorted rows costs a fraction of it. So an
import into an empty catalog `COPY`s its chunks into `products_load`, a table
without indexes (each chunk committed, so a killed import resumes where it
stopped), then builds the primary key and search indexes once and swaps the
table in for `products` in one short transaction. Until the swap the catalog
stays as it was: empty, and answering. Writes made through the API during the
load are kept and win over the loaded rows.
"""

from __future__ import annotations

import asyncpg
import structlog

from services.product.domain import DATA_FIELDS
from services.product.store import secondary_indexes

log = structlog.get_logger("bmc.product.import")

TABLE = "products_load"
# The columns of `products` (migration product_0001) up to `eligible`, in
# its order; the bookkeeping columns are added after the load with constant
# defaults, which PostgreSQL stores once instead of writing into every row.
CREATE = """
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
COPY_COLUMNS = (*DATA_FIELDS, "eligible")
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
INDEXES = secondary_indexes(TABLE)
_KEPT_WRITES = """
INSERT INTO products_load SELECT * FROM products
ON CONFLICT (code) DO UPDATE SET
    (display_name, description, category, subcategory, processing_level, unit_code, vat_treatment,
     withholding_class, eligible, active, revision, change, actor, create_time, update_time)
  = (EXCLUDED.display_name, EXCLUDED.description, EXCLUDED.category, EXCLUDED.subcategory,
     EXCLUDED.processing_level, EXCLUDED.unit_code, EXCLUDED.vat_treatment, EXCLUDED.withholding_class,
     EXCLUDED.eligible, EXCLUDED.active, EXCLUDED.revision, EXCLUDED.change, EXCLUDED.actor,
     EXCLUDED.create_time, EXCLUDED.update_time)
"""


async def owner(raw: asyncpg.Connection) -> str | None:
    """The operation whose first load `products_load` holds, if it exists."""
    if not await raw.fetchval("SELECT to_regclass('products_load') IS NOT NULL"):
        return None
    return str(await raw.fetchval("SELECT coalesce(obj_description('products_load'::regclass, 'pg_class'), '')"))


async def claim(raw: asyncpg.Connection, operation: str) -> bool:
    """Whether `operation` loads the catalog as a first load: it already
    does (resuming), or the catalog is empty and no other load is pending."""
    current = await owner(raw)
    if current is not None:
        return current == operation
    if await raw.fetchval("SELECT EXISTS (SELECT 1 FROM products)"):
        return False
    async with raw.transaction():
        await raw.execute(CREATE)
        await raw.execute(f"COMMENT ON TABLE products_load IS {_literal(operation)}")
    log.info("first load: rows go to products_load, indexed once at the end", operation=operation)
    return True


async def duplicates(raw: asyncpg.Connection) -> int:
    """Makes codes unique, keeping each code's last row (rows are only ever
    appended, and autovacuum is off, so physical order is load order);
    returns how many earlier rows were dropped."""
    if await raw.fetchval("SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'products_load_pkey')"):
        return 0
    try:
        await raw.execute("ALTER TABLE products_load ADD CONSTRAINT products_load_pkey PRIMARY KEY (code)")
        return 0
    except asyncpg.UniqueViolationError:
        pass
    async with raw.transaction():
        status = await raw.execute(
            """
            DELETE FROM products_load WHERE ctid IN (
                SELECT ctid FROM (
                    SELECT ctid, row_number() OVER (PARTITION BY code ORDER BY ctid DESC) AS rank
                    FROM products_load
                ) ranked WHERE rank > 1
            )
            """
        )
        await raw.execute("ALTER TABLE products_load ADD CONSTRAINT products_load_pkey PRIMARY KEY (code)")
    return int(status.split()[-1])


async def index(raw: asyncpg.Connection, change: str, actor: str) -> None:
    """Builds what the catalog needs on the loaded rows (idempotent)."""
    await raw.execute(_BOOKKEEPING.format(change=_literal(change), actor=_literal(actor)))
    for statement in INDEXES.values():
        await raw.execute(statement)
    await raw.execute(
        "INSERT INTO product_names SELECT DISTINCT display_name FROM products_load ON CONFLICT DO NOTHING"
    )


async def swap(raw: asyncpg.Connection) -> int:
    """Puts the loaded table in place of `products`, keeping rows written
    meanwhile through the API; returns how many there were."""
    async with raw.transaction():
        await raw.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
        kept = await raw.execute(_KEPT_WRITES)
        await raw.execute("DROP TABLE products")
        await raw.execute("ALTER TABLE products_load RENAME TO products")
        await raw.execute("ALTER TABLE products RENAME CONSTRAINT products_load_pkey TO products_pkey")
        for name in INDEXES:
            await raw.execute(f"ALTER INDEX {name} RENAME TO {name.replace('products_load_', 'products_')}")
        await raw.execute(_DEFAULTS)
        await raw.execute("COMMENT ON TABLE products IS NULL")
    await raw.execute("ANALYZE products")
    return int(kept.split()[-1])


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
