"""A page as words with boxes, and an invoice's fields read from its
geometry rather than from line patterns tuned to known layouts.

Words (from a PDF's text layer or from Tesseract) are grouped into rows and,
within a row, into phrases: runs of words with no wide gap, which is how a
label, a value or a table cell prints. A field is found by its label among
the label's variants, and its value is associated by position: after the
label in the same phrase, in the next phrase of the row, or in the phrase
beneath it (a grid cell, a table column). Candidates are then chosen by
plausibility: a NIT's check digit must verify and the NIT must sit in its
party's block (the label governing it is the nearest party label above it
in its column, and a footer's technology provider or bank is no party);
amounts must satisfy subtotal + taxes = total; a CUFE is 96 hexadecimal
digits and, when the issuer's technical key is known (DIAN's test key is),
must recompute from the other fields.

Each field's confidence comes from the kind of evidence behind it (`TIERS`),
calibrated on held-out layout families (README, "OCR reliability")."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from difflib import SequenceMatcher
from statistics import median

from services.dian.cufe import TEST_ENVIRONMENT_KEY
from services.dian.nit import check_digit
from services.ocr.domain import (
    BASE_CONFIDENCE,
    Box,
    Field,
    Line,
    PageText,
    Source,
    fold,
    line_items,
    parse_amount,
    parse_date,
    parse_time,
    recomputed,
    union,
)

# ---------------------------------------------------------------- the page


@dataclass(frozen=True)
class Word:
    text: str
    folded: str
    box: Box

    @property
    def right(self) -> float:
        return self.box[0] + self.box[2]

    @property
    def middle(self) -> float:
        return self.box[1] + self.box[3] / 2


@dataclass(frozen=True)
class Phrase:
    words: tuple[Word, ...]
    row: int
    index: int  # position in its row, left to right

    @property
    def text(self) -> str:
        return " ".join(w.text for w in self.words)

    @property
    def folded(self) -> str:
        return " ".join(w.folded for w in self.words)

    @property
    def box(self) -> Box:
        return union(w.box for w in self.words) or self.words[0].box

    def tail(self, folded_end: int) -> tuple[str, tuple[Word, ...]]:
        """The words after a match ending at `folded_end` of the folded text,
        with the part of a word the match ended inside."""
        at, rest = 0, []
        cut = ""
        for word in self.words:
            end = at + len(word.folded)
            if end <= folded_end:
                at = end + 1
                continue
            if at < folded_end < end:
                cut = word.text[folded_end - at :]
            else:
                rest.append(word)
            at = end + 1
        text = " ".join(([cut] if cut else []) + [w.text for w in rest])
        return text, tuple(rest)


@dataclass(frozen=True)
class Hit:
    """A label found on the page: its phrase, its box and what follows it in the phrase."""

    phrase: Phrase
    box: Box
    before: str  # folded text before the label in its phrase
    after: str
    after_words: tuple[Word, ...]


@dataclass(frozen=True)
class Value:
    text: str
    box: Box
    relation: str  # inline | right | below


class Page:
    """Words grouped into rows and phrases."""

    def __init__(self, content: PageText) -> None:
        self.aspect = content.aspect
        words = _words(content)
        self.line = median([w.box[3] for w in words]) if words else 0.01
        self.rows: list[list[Phrase]] = []
        for number, row in enumerate(_rows(words, self.line * 0.6)):
            phrases, current = [], [row[0]]
            for word in row[1:]:
                # A gap wider than about two characters separates a label from its value or two cells.
                # A currency sign stays with its amount however far the amount is right-aligned.
                if word.box[0] - current[-1].right > self.line * 1.6 and current[-1].text not in ("$", "COP"):
                    phrases.append(current)
                    current = []
                current.append(word)
            phrases.append(current)
            self.rows.append([Phrase(tuple(p), number, i) for i, p in enumerate(phrases)])

    @property
    def phrases(self) -> Iterator[Phrase]:
        for row in self.rows:
            yield from row

    def text(self) -> str:
        """The page in reading order, a row per line, cells apart."""
        return "\n".join("   ".join(p.text for p in row) for row in self.rows)

    def find(self, pattern: re.Pattern[str]) -> list[Hit]:
        hits = []
        for phrase in self.phrases:
            folded = phrase.folded
            for m in pattern.finditer(folded):
                after, after_words = phrase.tail(m.end())
                covered = _covered(phrase, m.start(), m.end())
                box = union(w.box for w in covered) or phrase.box
                hits.append(Hit(phrase, box, folded[: m.start()], after, after_words))
        return hits

    def values(self, hit: Hit) -> Iterator[Value]:
        """What may be the labelled value: the rest of its phrase, the next
        phrase on the row, and the phrases beneath the label."""
        rest = hit.after.strip(" :.-#")
        if rest:
            yield Value(rest, union(w.box for w in hit.after_words) or hit.box, "inline")
        row = self.rows[hit.phrase.row]
        if hit.phrase.index + 1 < len(row):
            right = row[hit.phrase.index + 1]
            if right.box[0] - hit.box[0] < self.line * 55:
                yield Value(right.text, right.box, "right")
        yield from self.below(hit.box, hit.phrase.row)

    def below(self, box: Box, row: int, rows: int = 3) -> Iterator[Value]:
        left, right = box[0], box[0] + box[2]
        bottom = box[1] + box[3]
        for following in self.rows[row + 1 : row + 1 + rows]:
            for phrase in following:
                top = phrase.box[1]
                if top - bottom > self.line * 4.5:
                    return
                p_left, p_right = phrase.box[0], phrase.box[0] + phrase.box[2]
                if p_left < right + self.line and p_right > left - self.line and abs(p_left - left) < self.line * 20:
                    yield Value(phrase.text, phrase.box, "below")
                    break


def _words(content: PageText) -> list[Word]:
    """The page's words with their boxes in one unit both ways (the page's
    height: a gap is as wide as it looks); a text with no positions is laid
    out as printed rows of equal characters."""
    found = []
    line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\n|\r", content.text)]
    for m in re.finditer(r"\S+", content.text):
        if content.spans:
            box = content.box(m.start(), m.end())
        else:
            row = bisect_right(line_starts, m.start()) - 1
            column = m.start() - line_starts[row]
            box = (column * 0.008, row * 0.015, len(m[0]) * 0.008, 0.012)
        if box is not None:
            left, top, width, height = box
            found.append(Word(m[0], fold(m[0]), (left * content.aspect, top, width * content.aspect, height)))
    return found


def _rows(words: Sequence[Word], tolerance: float) -> list[list[Word]]:
    """Words whose boxes share most of their height print on one row (an
    accent or a descender changes a word's box, not its row)."""
    rows: list[list[Word]] = []
    extents: list[tuple[float, float]] = []
    for word in sorted(words, key=lambda w: (w.middle, w.box[0])):
        top, bottom = word.box[1], word.box[1] + word.box[3]
        for index in range(len(rows) - 1, max(-1, len(rows) - 4), -1):
            row_top, row_bottom = extents[index]
            overlap = min(bottom, row_bottom) - max(top, row_top)
            if (
                overlap > 0.5 * min(bottom - top, row_bottom - row_top)
                or abs((top + bottom) / 2 - (row_top + row_bottom) / 2) <= tolerance
            ):
                rows[index].append(word)
                extents[index] = (min(top, row_top), max(bottom, row_bottom))
                break
        else:
            rows.append([word])
            extents.append((top, bottom))
    for row in rows:
        row.sort(key=lambda w: w.box[0])
    rows.sort(key=lambda r: min(w.middle for w in r))
    return rows


def _covered(phrase: Phrase, start: int, end: int) -> list[Word]:
    at, found = 0, []
    for word in phrase.words:
        if at < end and at + len(word.folded) > start:
            found.append(word)
        at += len(word.folded) + 1
    return found


# ---------------------------------------------------------------- evidence and confidence

# How sure a value is, by the evidence behind it and where it was read: a
# check that holds (a check digit, the totals' arithmetic, the CUFE
# recomputed), a label naming the field with one value, a generic label or a
# contested one, and a guess by position. Calibrated on the held-out families.
TIERS = {
    "verified": {Source.TEXT_LAYER: 0.99, Source.OCR: 0.96},
    "labelled": {Source.TEXT_LAYER: 0.95, Source.OCR: 0.8},
    "weak": {Source.TEXT_LAYER: 0.7, Source.OCR: 0.6},
    "guess": {Source.TEXT_LAYER: 0.4, Source.OCR: 0.3},
}


@dataclass(frozen=True)
class Candidate:
    name: str
    value: str
    score: float
    box: Box
    raw: str
    tier: str


def _field(candidate: Candidate, source: Source, page: int, aspect: float) -> Field:
    confidence = TIERS[candidate.tier].get(source, BASE_CONFIDENCE[source])
    left, top, width, height = candidate.box
    box = (round(left / aspect, 4), top, round(width / aspect, 4), height)  # back to fractions of the page
    return Field(candidate.name, candidate.value, source, confidence, candidate.raw[:200], page, box)


def _best(candidates: Iterable[Candidate]) -> Candidate | None:
    ranked = sorted(candidates, key=lambda c: -c.score)
    if not ranked:
        return None
    best = ranked[0]
    rivals = {c.value for c in ranked[1:] if c.score >= best.score * 0.9 and c.value != best.value}
    if rivals and best.tier == "labelled":
        return replace(best, tier="weak")
    return best


def _label(*variants: str) -> re.Pattern[str]:
    return re.compile(r"(?<![\w])(?:" + "|".join(variants) + r")(?![\w])")


# ---------------------------------------------------------------- the invoice number

_NUMBER_STRONG = _label(
    r"factura(?: electronica)?(?: de venta)?(?: electronica)?\s*(?:no|nro|n[^\w\s]{1,2}|numero|#)\.?",
    r"(?:no|nro|numero)\.? (?:de )?factura", r"invoice(?: / factura)? no\.?", r"factura electronica de venta",
    r"factura de venta", r"numero de factura", r"factura n",
)  # fmt: skip
# "N°" comes back from Tesseract as N*, N", N” or N?.
_NUMBER_WEAK = _label(r"n[^\w\s]{1,2}", r"nro\.?", r"numero", r"no\.")
_NOT_NUMBER = re.compile(r"resolucion|orden|compra|pedido|remision|cuenta|nit|tel|items|cc\b|autorizacion|rango")
_NUMBER_VALUE = re.compile(
    r"^\s*(?:no\.?|nro\.?|n[^\w\s]{1,2}|#)?\s*([a-z][a-z0-9]{0,4})?\s*[-\s]?\s*(\d{1,12})\b", re.I
)
_PREFIX = _label(r"prefijo")
_CONSECUTIVE = _label(r"consecutivo", r"numero consecutivo")


def _numbers(page: Page) -> list[Candidate]:
    found = []
    for pattern, strength in ((_NUMBER_STRONG, 1.0), (_NUMBER_WEAK, 0.6)):
        for hit in page.find(pattern):
            if _NOT_NUMBER.search(hit.before):
                continue
            for value in page.values(hit):
                m = _NUMBER_VALUE.match(value.text)
                if not m or (value.relation != "inline" and _NOT_NUMBER.search(fold(value.text))):
                    continue
                number = (m[1] or "").upper() + m[2]
                score = strength * (1.0 if value.relation != "below" else 0.9)
                tier = "labelled" if strength == 1.0 else "weak"
                found.append(Candidate("number", number, score, value.box, m[0].strip(), tier))
                break
    prefixes = [v for hit in page.find(_PREFIX) if not _NOT_NUMBER.search(hit.before) for v in page.values(hit)]
    consecutives = [v for hit in page.find(_CONSECUTIVE) for v in page.values(hit)]
    for prefix in prefixes[:1]:
        for consecutive in consecutives[:1]:
            p = re.match(r"^\s*([a-z0-9]{1,5})\b", prefix.text, re.I)
            c = re.match(r"^\s*(\d{1,12})\b", consecutive.text)
            if p and c:
                box = union((prefix.box, consecutive.box)) or prefix.box
                raw = f"{prefix.text} {consecutive.text}"
                found.append(Candidate("number", p[1].upper() + c[1], 1.05, box, raw, "labelled"))
    return found


# ---------------------------------------------------------------- dates and times

_DATE_STRONG = _label(
    r"fecha(?: y hora)? (?:de )?(?:la )?(?:emision|expedicion|generacion|factura|facturacion)",
    r"generada el", r"emitida el", r"expedida el", r"fecha de la factura",
)  # fmt: skip
_DATE_WEAK = _label(r"fecha")
_NOT_ISSUE = re.compile(r"venc|resolucion|pago|entrega|validacion|desde|hasta|vigencia|limite|autoriza|recib")
_TIME_LABEL = _label(r"hora(?: de (?:emision|expedicion|generacion))?", r"a las")


def _dates(page: Page) -> tuple[list[Candidate], list[Candidate]]:
    dates, times = [], []
    for pattern, strength in ((_DATE_STRONG, 1.0), (_DATE_WEAK, 0.6)):
        for hit in page.find(pattern):
            label = hit.phrase.folded
            if _NOT_ISSUE.search(label) or _NOT_ISSUE.search(fold(hit.after)[:12]):
                continue
            for value in page.values(hit):
                if _NOT_ISSUE.search(fold(value.text)):
                    continue
                day = parse_date(value.text)
                if day is None:
                    continue
                score = strength * (1.0 if value.relation != "below" else 0.9)
                tier = "labelled" if strength == 1.0 else "weak"
                dates.append(Candidate("issue_date", day.isoformat(), score, value.box, value.text, tier))
                if (time := parse_time(value.text)) is not None:
                    times.append(Candidate("issue_time", time, score * 0.95, value.box, value.text, tier))
                break
    for hit in page.find(_TIME_LABEL):
        if _NOT_ISSUE.search(hit.before):
            continue
        for value in page.values(hit):
            if (time := parse_time(value.text)) is not None:
                times.append(Candidate("issue_time", time, 1.0, value.box, value.text, "labelled"))
                break
    return dates, times


# ---------------------------------------------------------------- parties

_ID_LABEL = _label(
    r"n[i1l|]t(?:\s*/\s*c\.?\s*c\.?)?", r"c\.\s?c\.?", r"cc", r"cedula(?: de ciudadania)?", r"identificacion",
    r"documento(?: de identidad)?", r"nit o cc", r"no\. de identificacion", r"doc\.",
)  # fmt: skip
_SELLER = _label(
    r"emisor", r"vendedor", r"facturador", r"datos del (?:emisor|vendedor|facturador)", r"informacion del emisor",
    r"obligado a facturar", r"prestador",
)  # fmt: skip
_BUYER = _label(
    r"adquiriente", r"adquirente", r"cliente", r"comprador", r"senor(?:es|\(es\))?", r"receptor", r"facturar a",
    r"datos del (?:adquiriente|adquirente|cliente|comprador)", r"informacion del cliente", r"destinatario",
)  # fmt: skip
# Where a NIT belongs to no party: the software's provider, a bank, the DIAN resolution.
_DECOY = _label(
    r"proveedor tecnologico", r"proveedor de software", r"software", r"elaborado por", r"impreso por",
    r"generado por", r"desarrollado por", r"banco", r"cuenta", r"resolucion", r"consignar", r"transportador",
)  # fmt: skip
_NIT_VALUE = re.compile(r"^\s*[:.#]?\s*(\d{1,3}(?:[.,]\d{3}){1,4}|\d{5,15})(?:\s*-\s*(\d)|\s+(\d))?(?!\d)")
_DV = re.compile(r"^\s*d\.?\s*v\.?\s*[:.]?\s*(\d)\b")
_DV_LABEL = _label(r"d\.?v\.?", r"digito de verificacion")


@dataclass(frozen=True)
class PartyId:
    number: str
    dv: str
    box: Box
    raw: str
    governed_by: str  # seller | buyer | decoy | none
    distance: float  # from the governing label, in rows

    @property
    def checks(self) -> bool:
        return bool(self.dv) and len(self.number) <= 15 and check_digit(self.number) == int(self.dv)


def _party_ids(page: Page) -> list[PartyId]:
    marks = [(hit, "seller") for hit in page.find(_SELLER)]
    marks += [(hit, "buyer") for hit in page.find(_BUYER)]
    marks += [(hit, "decoy") for hit in page.find(_DECOY)]
    dv_hits = page.find(_DV_LABEL)
    found = []
    for hit in page.find(_ID_LABEL):
        governed = "decoy" if re.search(r"\b(?:proveedor|software|banco|cuenta)\b", hit.before) else ""
        for value in page.values(hit):
            m = _NIT_VALUE.match(value.text)
            if not m:
                continue
            number = re.sub(r"[.,]", "", m[1])
            dv = m[2] or m[3] or ""
            rest = value.text[m.end() :]
            if not dv and (d := _DV.match(fold(rest))):
                dv = d[1]
            if not dv:
                dv = _dv_nearby(page, dv_hits, value.box)
            owner, distance = (governed, 0.0) if governed else _governing(page, marks, value.box)
            found.append(PartyId(number, dv, value.box, m[0].strip(), owner, distance))
            break
    return found


def _dv_nearby(page: Page, dv_hits: Sequence[Hit], box: Box) -> str:
    """A check digit printed in a cell of its own, right of or beneath the number."""
    for hit in dv_hits:
        same_row = abs(hit.box[1] - box[1]) < page.line and 0 <= hit.box[0] - box[0] < page.line * 28
        beneath = 0 < hit.box[1] - box[1] < page.line * 4 and abs(hit.box[0] - box[0]) < page.line * 5
        if same_row or beneath:
            for value in page.values(hit):
                if m := re.match(r"^\s*(\d)\b", value.text):
                    return m[1]
    return ""


def _governing(page: Page, marks: Sequence[tuple[Hit, str]], box: Box) -> tuple[str, float]:
    """The party label a value sits under: the nearest one above it (or
    left of it on its row) in its column, within a block's height."""
    best, best_distance = "none", float("inf")
    for hit, kind in marks:
        label = hit.box
        rows_above = (box[1] - label[1]) / page.line
        if rows_above < -0.5 or rows_above > 16:
            continue
        gap = max(0.0, label[0] - (box[0] + box[2]), box[0] - (label[0] + label[2]))
        if rows_above < 0.5 and label[0] > box[0]:
            continue  # on the same row, a label counts only from the left
        distance = rows_above + gap / page.line * 0.5
        if distance < best_distance:
            best, best_distance = kind, distance
    return best, best_distance


def _parties(page: Page) -> list[Candidate]:
    ids = _party_ids(page)
    found = []
    for party, name in (("seller", "seller_nit"), ("buyer", "buyer_id")):
        for pid in ids:
            if pid.governed_by == party:
                tier = "verified" if pid.checks else "labelled"
                score = 1.0 + 0.2 * pid.checks - pid.distance * 0.01
            elif party == "seller" and pid.governed_by == "none" and pid.box[1] < 0.3:
                tier, score = "weak", 0.6 + 0.1 * pid.checks - pid.box[1]  # the letterhead: seller unless labelled
            else:
                continue
            if pid.dv and not pid.checks:
                tier = "weak"
            found.append(Candidate(name, pid.number, score, pid.box, pid.raw, tier))
            if pid.dv:
                found.append(Candidate(f"{name}_dv", pid.dv, score, pid.box, pid.raw, tier))
    return found


_NAME_KEY = re.compile(r"^\s*(?:razon social|nombre(?: o razon social)?|senor(?:es)?)\s*:?\s*", re.I)


def _name_in(text: str) -> str:
    """A party's name in a phrase: before its identification ("Name — NIT
    ..."), without a "Razón social:" key; "" when the phrase is no name."""
    folded = fold(text)
    if cut := _ID_LABEL.search(folded):
        text, folded = text[: cut.start()], folded[: cut.start()]
    key = _NAME_KEY.match(folded)
    name = text[key.end() if key else 0 :].strip(" :—-·")
    if len(name) < 4 or sum(c.isdigit() for c in name) > 2 or re.match(r"factura|fecha|n[o°]\b", fold(name)):
        return ""
    return name


def _names(page: Page) -> list[Candidate]:
    """The parties' names: after (or beneath) a party label; the seller's
    may be the letterhead's first row."""
    found = []
    for pattern, name in ((_SELLER, "seller_name"), (_BUYER, "buyer_name")):
        for hit in page.find(pattern):
            for value in page.values(hit):
                if party := _name_in(value.text):
                    found.append(Candidate(name, party, 1.0, value.box, value.text, "labelled"))
                    break
    for row in page.rows[:3]:
        if party := _name_in(row[0].text):
            found.append(Candidate("seller_name", party, 0.5, row[0].box, row[0].text, "weak"))
            break
    return found


# ---------------------------------------------------------------- amounts

_SUBTOTAL = _label(
    r"sub ?total", r"(?:total|valor) bruto", r"(?:total )?base(?: gravable)?", r"suma", r"valor mercancia",
    r"valor antes de iva", r"total sin iva", r"total antes de impuestos", r"valor subtotal", r"total base gravable",
)  # fmt: skip
_VAT = _label(
    r"(?:total |valor |impuesto )?iva(?: \d{1,2}(?:[.,]\d{1,2})? ?%?)?", r"impuestos?", r"impuesto al valor agregado",
    r"total impuestos",
)  # fmt: skip
_TOTAL = _label(
    r"total a pagar", r"valor a pagar", r"total factura", r"valor total(?: a pagar)?", r"valor total factura",
    r"neto a pagar", r"total neto", r"total documento", r"total general", r"gran total", r"total",
)  # fmt: skip
_NOT_AMOUNT = re.compile(r"^\s*(?:items?|unidades|cantidad|lineas|iva\b|bruto)")
# A currency sign, which a scan may turn into another symbol ("> 227719500").
_AMOUNT = re.compile(r"(?:\$|cop|[^\w\s])?\s*(\d{1,3}(?:[.,]\d{3})+(?:[.,]\d{2})?|\d+(?:[.,]\d{2})?)(?![\d%])", re.I)


def _amounts(page: Page, name: str, pattern: re.Pattern[str]) -> list[Candidate]:
    found = []
    for hit in page.find(pattern):
        if name == "total" and (_NOT_AMOUNT.match(fold(hit.after)) or re.search(r"\bsub ?$", hit.before)):
            continue
        if name == "subtotal" and hit.before.strip().endswith("total"):
            continue
        for value in page.values(hit):
            m = _AMOUNT.match(value.text.strip())
            if not m or "%" in value.text[: m.end() + 1]:
                continue
            amount = parse_amount(m[1])
            if amount is None:
                continue
            closeness = 1.0 if value.relation != "below" else 0.85
            found.append(Candidate(name, str(amount), closeness, value.box, value.text, "labelled"))
            break
    return found


def _totals(page: Page, lines_total: Decimal | None) -> list[Candidate]:
    """Subtotal, VAT and total chosen together: the combination whose
    arithmetic holds (and whose subtotal is the lines' sum) wins."""
    subtotals, vats, totals = (_amounts(page, n, p) for n, p in (("subtotal", _SUBTOTAL), ("vat", _VAT),
                                                                 ("total", _TOTAL)))  # fmt: skip
    best: tuple[float, list[Candidate]] | None = None
    for s in subtotals:
        for v in vats or [Candidate("vat", "0.00", 0.5, s.box, "", "guess")]:
            for t in totals:
                if Decimal(s.value) + Decimal(v.value) != Decimal(t.value) or Decimal(t.value) == 0:
                    continue
                score = s.score + v.score + t.score + (1.0 if lines_total == Decimal(s.value) else 0.0)
                if best is None or score > best[0]:
                    best = (score, [s, v, t] if vats else [s, t])
    if best is not None:
        return [replace(c, tier="verified") for c in best[1]]
    # Nothing adds up: the best of each, and none of them verified.
    chosen = [c for c in (_best(subtotals), _best(vats), _best(totals)) if c is not None]
    return [replace(c, tier="weak") for c in chosen]


# ---------------------------------------------------------------- the CUFE

_CUFE_LABEL = _label(r"cufe(?:/cude)?", r"cude", r"codigo unico de factura(?: electronica)?(?: \(cufe\))?")
# Characters OCR confuses with hexadecimal digits.
_HEX_LOOKALIKES = str.maketrans({"l": "1", "i": "1", "o": "0", "s": "5", "g": "9", "z": "2", "q": "9", "|": "1"})


def _hex(text: str) -> str:
    """A phrase as hexadecimal digits (OCR's look-alikes mapped back), or ""
    when it does not look like a run of them (a misread digit or two
    allowed: the run still marks where the CUFE is printed)."""
    joined = re.sub(r"[\s:]", "", fold(text)).translate(_HEX_LOOKALIKES)
    hexadecimal = sum(c in "0123456789abcdef" for c in joined)
    return joined if len(joined) >= 6 and hexadecimal >= 0.85 * len(joined) else ""


@dataclass(frozen=True)
class HexRun:
    digits: str
    box: Box
    raw: str


Reread = Callable[[Box], Sequence[str]]
"""Reads a region of the page again (a box in fractions of the page) in
other ways than the page was read: one text per way."""


def _hex_runs(page: Page) -> Iterator[HexRun]:
    """After each CUFE label, the hexadecimal runs that continue it: on the
    label's row, then on the rows beneath, aligned with the first run."""
    for hit in page.find(_CUFE_LABEL):
        runs: list[tuple[str, Box, str]] = []
        if inline := _hex(hit.after):
            runs.append((inline, union(w.box for w in hit.after_words) or hit.box, hit.after))
        row = page.rows[hit.phrase.row]
        if not runs and hit.phrase.index + 1 < len(row) and (h := _hex(row[hit.phrase.index + 1].text)):
            runs.append((h, row[hit.phrase.index + 1].box, row[hit.phrase.index + 1].text))
        for following in page.rows[hit.phrase.row + 1 : hit.phrase.row + 6]:
            if sum(len(r[0]) for r in runs) >= 96:
                break
            anchor = runs[-1][1][0] if runs else hit.box[0]
            nearest = min(following, key=lambda p: abs(p.box[0] - anchor))
            h = _hex(nearest.text)
            if not h or abs(nearest.box[0] - anchor) > page.line * 6:
                if runs:
                    break
                continue
            runs.append((h, nearest.box, nearest.text))
        if runs:
            yield HexRun(
                "".join(r[0] for r in runs), union(r[1] for r in runs) or hit.box, " ".join(r[2] for r in runs)
            )


def _grown(box: Box, margin: float) -> Box:
    left, top, width, height = box
    return (left - margin, top - margin, width + 2 * margin, height + 2 * margin)


def _is_cufe(text: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{96}", text) is not None


def consensus(reads: Sequence[str]) -> str:
    """One CUFE from several readings of it: the reading of 96 digits most
    like the others, each of its digits then put to the vote of every
    reading aligned with it (a reading that dropped or gained a character
    still votes on the rest); "" when no reading has 96 digits."""
    pivots = [r for r in reads if _is_cufe(r)]
    if not pivots:
        return ""
    pivot = max(pivots, key=lambda p: sum(SequenceMatcher(None, p, r, autojunk=False).ratio() for r in reads))
    votes = [Counter(digit) for digit in pivot]
    for other in reads:
        if other is pivot:
            continue
        for tag, i1, i2, j1, j2 in SequenceMatcher(None, pivot, other, autojunk=False).get_opcodes():
            if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
                for k in range(i2 - i1):
                    votes[i1 + k][other[j1 + k]] += 1
    return "".join(v.most_common(1)[0][0] for v in votes)


def _printed_as(cufe: str, reads: Sequence[str]) -> bool:
    """Whether one of the readings is `cufe` but for a few misread, dropped
    or extra characters: a random 96-digit value matches a reading in no more
    than about half its digits, so 88 of them are the same printed value."""
    return any(
        sum(b.size for b in SequenceMatcher(None, cufe, r, autojunk=False).get_matching_blocks()) >= 88 for r in reads
    )


@dataclass(frozen=True)
class CufeReading:
    run: HexRun
    reads: tuple[str, ...]
    candidate: Candidate | None  # the consensus, when a reading has 96 digits


def _cufes(page: Page, reread: Reread | None) -> list[CufeReading]:
    """After each CUFE label, its readings: the page's and, for a scan, the
    region read again; the candidate is labelled only when all agree."""
    found = []
    for run in _hex_runs(page):
        reads = [run.digits]
        if reread is not None:
            left, top, width, height = _grown(run.box, page.line * 0.6)
            reads += [_hex(text) for text in reread((left / page.aspect, top, width / page.aspect, height))]
        value = consensus(reads)
        tier = "labelled" if all(r == value for r in reads) else "weak"
        candidate = Candidate("cufe", value, 1.0, run.box, run.raw, tier) if value else None
        found.append(CufeReading(run, tuple(r for r in reads if r), candidate))
    return found


# ---------------------------------------------------------------- the page's fields


@dataclass(frozen=True)
class PageReading:
    fields: list[Field]
    lines: list[Line]


def read_page(
    content: PageText, source: Source, page: int = 0, keys: Sequence[str] = (), reread: Reread | None = None
) -> PageReading:
    """The invoice's fields on one page, each with a calibrated confidence;
    `keys` are issuers' technical keys known besides DIAN's test key, and
    `reread` reads the CUFE's region again (a scan's small hexadecimal print
    is where Tesseract errs most)."""
    geometry = Page(content)
    lines = line_items(geometry.text(), source)
    lines_total = sum((line.total for line in lines), Decimal(0)) if lines else None
    dates, times = _dates(geometry)
    parties = _parties(geometry)
    cufes = _cufes(geometry, reread)
    candidates = _numbers(geometry) + dates + times + parties + _names(geometry)
    candidates += [c.candidate for c in cufes if c.candidate]
    chosen: dict[str, Candidate] = {}
    for name in ("number", "issue_date", "issue_time", "seller_nit", "buyer_id", "cufe", "seller_name", "buyer_name"):
        best = _best(c for c in candidates if c.name == name)
        if best is not None:
            chosen[name] = best
    for party in ("seller_nit", "buyer_id"):
        if party in chosen:
            dvs = [c for c in candidates if c.name == f"{party}_dv" and c.box == chosen[party].box]
            if dvs:
                chosen[f"{party}_dv"] = dvs[0]
    if chosen.get("seller_nit") and chosen.get("buyer_id") and chosen["seller_nit"].value == chosen["buyer_id"].value:
        # One number for both parties: the weaker claim gives way.
        weaker = min(("seller_nit", "buyer_id"), key=lambda n: chosen[n].score)
        chosen.pop(weaker)
        chosen.pop(f"{weaker}_dv", None)
    for candidate in _totals(geometry, lines_total):
        chosen[candidate.name] = candidate
    fields = {name: _field(c, source, page, geometry.aspect) for name, c in chosen.items()}
    # The CUFE the other fields hash to, printed after a CUFE label (a few
    # characters misread at most): it and every field it covers are right.
    for expected in recomputed(fields, (TEST_ENVIRONMENT_KEY, *keys)):
        printed = next((c for c in cufes if _printed_as(expected, c.reads)), None)
        if printed is None:
            continue
        chosen["cufe"] = Candidate("cufe", expected, 1.0, printed.run.box, printed.run.raw, "verified")
        for name in ("number", "issue_date", "issue_time", "seller_nit", "buyer_id", "subtotal", "vat", "total",
                     "cufe"):  # fmt: skip
            if name in chosen:
                fields[name] = _field(replace(chosen[name], tier="verified"), source, page, geometry.aspect)
        break
    return PageReading(list(fields.values()), lines)
