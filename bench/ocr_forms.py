"""OCR accuracy per form of upload, on the held-out layout families
(`services.ocr.families.HELD_OUT`, never used while developing the reader),
without a QR code: the vector PDF, scans at 150, 200 and 300 dpi, the scan
as an image-only PDF, a phone photo, and the 200-dpi scan gone through the
degradations offices produce (JPEG at quality 40, blur, low contrast, a 4°
skew). Prints, per form, the key fields and all fields right, the fields
reported at >= 0.9 confidence that are right, and seconds per page, with
the vector PDF (text layer, no OCR) as the baseline of the same run.

    .venv/bin/python -m bench.ocr_forms [--per-family 3] [--forms "photo,blurred"] [--development]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import time

from services.ocr.families import DEVELOPMENT, HELD_OUT, accuracy, graded, invoices_of, render
from services.ocr.reading import Limits, load_worker_engine, read_in_worker
from services.ocr.samples import FORMS, as_form


def per_form(per_family: int, forms: tuple[str, ...], families: tuple[str, ...] = HELD_OUT, seed: int = 0) -> str:
    invoices = list(invoices_of(families, per_family, seed))
    pdfs = [render(invoice) for invoice in invoices]
    rows = [f"{'form':<16} {'key fields':>10} {'all fields':>10} {'>= 0.9 right':>13} {'s/page':>7}"]
    with concurrent.futures.ProcessPoolExecutor(2, initializer=load_worker_engine) as pool:
        for form in forms:
            contents = [as_form(pdf, form, int(i.consecutive) % 1000) for pdf, i in zip(pdfs, invoices, strict=True)]
            started = time.perf_counter()
            readings = list(pool.map(read_in_worker, contents, [Limits()] * len(contents), [""] * len(contents)))
            per_page = (time.perf_counter() - started) * 2 / len(contents)  # two workers
            grades = [g for invoice, (r, _, _) in zip(invoices, readings, strict=True) for g in graded(invoice, r)]
            key, every = accuracy(grades)
            sure = [g.right for g in grades if g.confidence >= 0.9]
            rows.append(f"{form:<16} {key:>10.1%} {every:>10.1%} {f'{sum(sure)}/{len(sure)}':>13} {per_page:>7.2f}")
    kind = "held-out" if families == HELD_OUT else "development"
    return "\n".join(rows) + f"\n({len(invoices)} invoices, {len(families)} {kind} families, no QR code)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-family", type=int, default=3)
    parser.add_argument("--forms", default=",".join(FORMS), help=f"comma-separated, from: {', '.join(FORMS)}")
    parser.add_argument(
        "--development", action="store_true", help="the development families (other invoices): to work on the reader"
    )
    args = parser.parse_args()
    forms = tuple(f.strip() for f in args.forms.split(","))
    print(
        per_form(args.per_family, forms, DEVELOPMENT, seed=5) if args.development else per_form(args.per_family, forms)
    )


if __name__ == "__main__":
    main()
