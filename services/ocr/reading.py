"""From uploaded bytes to a `Reading`, best source first: the DIAN QR code
(zxing-cpp) on every page, then the PDF's text layer (pypdfium2), and only
for pages with neither, Tesseract in Spanish (tesserocr) on an image with
its grey levels stretched, deskewed and its inverse-video banners turned
dark on white; the CUFE's region is read three more times (English model,
hexadecimal digits only) for the reader to vote. Refuses anything that is
not a readable PDF or image, within limits.

The service runs `read_in_worker` in isolated worker processes (one
Tesseract engine each; `services.kit.workers`): limits checked here refuse
a bomb before it is decoded (pixels counted from the header, page content
inflated only up to its limit), and the worker's time and memory budget
stops whatever these checks cannot foresee."""

from __future__ import annotations

import io
import queue
import re
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pikepdf
import pypdfium2 as pdfium
import tesserocr
import zxingcpp
from PIL import Image, ImageOps, ImageSequence

from services.kit.errors import FieldViolation, InvalidArgument, ResourceExhausted
from services.ocr.domain import (
    Box,
    PageText,
    Reading,
    Source,
    cross_check,
    disagreements,
    offer_page,
    parse_dian_qr,
    qr_fields,
    turned_back,
)
from services.ocr.layout import Reread, read_page

TESSDATA = Path("/usr/share/tesseract-ocr/5/tessdata")
MAGIC = {
    b"%PDF-": "application/pdf",
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"\xff\xd8\xff": "image/jpeg",
    b"II*\x00": "image/tiff",
    b"MM\x00*": "image/tiff",
}
MIN_TEXT_LAYER = 40  # characters: fewer means a scanned page with a stray word
UPRIGHT_FIELDS = 3  # labelled fields read on a page the right way up; fewer and the other turns are tried


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 20 * 1024 * 1024
    max_pages: int = 10
    max_pixels: int = 60_000_000  # per page: a decompression bomb is refused before it is decoded
    max_page_content: int = 8 * 1024 * 1024  # bytes of a PDF page's drawing instructions, once inflated
    page_seconds: float = 20.0
    ocr_dpi: int = 300

    def budget(self, pages: int | None = None) -> float:
        """Seconds a whole document may take to read."""
        return 5.0 + self.page_seconds * (pages or self.max_pages)


@dataclass(frozen=True)
class PageResult:
    page: int
    source: Source
    rotation: float  # quarter turns applied to read the page, in degrees
    skew: float
    seconds: float
    ocr_confidence: float


def invalid(reason: str, message: str, field: str = "content") -> InvalidArgument:
    return InvalidArgument(message, reason=reason, violations=[FieldViolation(field, message, reason)])


def content_type(content: bytes) -> str:
    for magic, kind in MAGIC.items():
        if content.startswith(magic):
            return kind
    raise invalid("UNSUPPORTED_FORMAT", "not a PDF, PNG, JPEG or TIFF file (by its first bytes)")


@dataclass
class Engine:
    """Tesseract in Spanish for pages, and in English restricted to the
    hexadecimal digits for the CUFE's region read again (the English model
    tells `a` from `2` and keeps `1`s and `f`s that the Spanish one drops)."""

    page: tesserocr.PyTessBaseAPI
    hexadecimal: tesserocr.PyTessBaseAPI

    @classmethod
    def load(cls, tessdata: Path) -> Engine:
        hexadecimal = tesserocr.PyTessBaseAPI(path=f"{tessdata}/", lang="eng", psm=tesserocr.PSM.SINGLE_BLOCK)
        hexadecimal.SetVariable("tessedit_char_whitelist", "0123456789abcdef")
        return cls(tesserocr.PyTessBaseAPI(path=f"{tessdata}/", lang="spa"), hexadecimal)

    def end(self) -> None:
        self.page.End()
        self.hexadecimal.End()


HEX_SCALES = (1.0, 1.5, 2.0)  # three more readings of the CUFE to vote with the page's


def hex_reread(api: tesserocr.PyTessBaseAPI, image: Image.Image) -> Reread:
    """Reads a region of `image` again, once per scale in `HEX_SCALES`."""

    def reread(box: Box) -> list[str]:
        left, top, width, height = box
        x0, y0 = max(0, round(left * image.width)), max(0, round(top * image.height))
        x1, y1 = (
            min(image.width, round((left + width) * image.width)),
            min(image.height, round((top + height) * image.height)),
        )
        if x1 - x0 < 8 or y1 - y0 < 4:
            return []
        region = image.crop((x0, y0, x1, y1))  # within the page: PIL pads beyond it with black
        texts = []
        for scale in HEX_SCALES:
            api.SetImage(
                region.resize((round(region.width * scale), round(region.height * scale)), Image.Resampling.LANCZOS)
            )
            texts.append(api.GetUTF8Text())
        return texts

    return reread


class TesseractPool:
    """Tesseract engines loaded once (the Spanish model takes a while) and
    lent to one page at a time; tesserocr releases the GIL while it reads, so
    engines on threads use every core."""

    def __init__(self, size: int, tessdata: Path = TESSDATA) -> None:
        self._engines: queue.Queue[Engine] = queue.Queue()
        for _ in range(size):
            self._engines.put(Engine.load(tessdata))

    @contextmanager
    def engine(self) -> Iterator[Engine]:
        engine = self._engines.get()
        try:
            yield engine
        finally:
            engine.page.Clear()
            engine.hexadecimal.Clear()
            self._engines.put(engine)

    def close(self) -> None:
        while not self._engines.empty():
            self._engines.get().end()


def ocr_text(api: tesserocr.PyTessBaseAPI, size: tuple[int, int]) -> PageText:
    """The recognised words regrouped into printed rows, with each word's box:
    Tesseract reads a label column and an amount column as separate blocks,
    and an invoice is only legible row by row ("Total a pagar: $ 19.813,50")."""
    width, height = size
    words: list[tuple[float, float, float, str, Box]] = []  # centre y, height, left x, text, box
    iterator = api.GetIterator()
    level = tesserocr.RIL.WORD
    while True:
        try:
            text = iterator.GetUTF8Text(level)
        except RuntimeError:  # tesserocr's way of saying the page has no words at all
            break
        box = iterator.BoundingBox(level)
        if text and box:
            left, top, right, bottom = box
            where = (left / width, top / height, (right - left) / width, (bottom - top) / height)
            words.append(((top + bottom) / 2, bottom - top, left, text, where))
        if not iterator.Next(level):
            break
    if not words:
        return PageText("")
    heights = sorted(w[1] for w in words)
    tolerance = heights[len(heights) // 2] * 0.6
    rows: list[list[tuple[float, float, float, str, Box]]] = []
    for word in sorted(words):
        if rows and abs(rows[-1][-1][0] - word[0]) <= tolerance:
            rows[-1].append(word)
        else:
            rows.append([word])
    parts: list[str] = []
    spans: list[tuple[int, int, Box]] = []
    offset = 0
    for row in rows:
        for position, word in enumerate(sorted(row, key=lambda w: w[2])):
            separator = " " if position else ("\n" if parts else "")
            parts.append(separator + word[3])
            offset += len(separator)
            spans.append((offset, offset + len(word[3]), word[4]))
            offset += len(word[3])
    return PageText("".join(parts), spans, width / height)


def _recognise(api: tesserocr.PyTessBaseAPI, image: Image.Image, limits: Limits, page: int) -> tuple[PageText, float]:
    """The page's text (in rows) and Tesseract's mean confidence (0-1)."""
    api.SetImage(image)
    if not api.Recognize(timeout=int(limits.page_seconds * 1000)):
        raise ResourceExhausted(f"page {page} took too long to read", reason="PAGE_TIMEOUT")
    return ocr_text(api, image.size), api.MeanTextConf() / 100


def text_layer(page: pdfium.PdfPage) -> PageText:
    """A PDF page's text with each character's box (PDF points, origin at the
    bottom left, turned into fractions of the page from the top left)."""
    textpage = page.get_textpage()
    text = textpage.get_text_range()
    count = textpage.count_chars()
    if count != len(text):
        return PageText(text)
    width, height = page.get_size()
    spans = []
    for index in range(count):
        left, bottom, right, top = textpage.get_charbox(index)
        if right > left and top > bottom:
            spans.append(
                (index, index + 1, (left / width, 1 - top / height, (right - left) / width, (top - bottom) / height))
            )
    return PageText(text, spans, width / height)


def qr_box(position: zxingcpp.Position, size: tuple[int, int]) -> Box:
    corners = (position.top_left, position.top_right, position.bottom_left, position.bottom_right)
    xs, ys = [c.x / size[0] for c in corners], [c.y / size[1] for c in corners]
    return (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))


def deskew_angle(image: Image.Image) -> float:
    """The small rotation (within ±8°) that makes text rows sharpest: the
    variance of the row darkness profile peaks when lines of text are level.
    Whole degrees first, then quarter degrees around the best."""
    small = ImageOps.grayscale(image)
    small.thumbnail((700, 700))
    binary = small.point(lambda v: 255 if v < 160 else 0)

    def sharpness(angle: float) -> float:
        rotated = binary.rotate(angle, resample=Image.Resampling.NEAREST, expand=False, fillcolor=0)
        profile = list(rotated.resize((1, rotated.height), Image.Resampling.BOX).tobytes())  # one byte per row (mode L)
        mean = sum(profile) / len(profile)
        return float(sum((v - mean) ** 2 for v in profile))

    coarse = max(range(-8, 9), key=sharpness)
    return max((coarse + q / 4 for q in range(-3, 4)), key=sharpness)


BAND_CELL = 16  # pixels: the grain at which dark bands are looked for
BAND_DARK = 110  # a cell this dark on average (of 255) is ink, not text on paper


def _dark_runs(profile: list[int], light: int, gap: int) -> list[tuple[int, int]]:
    """Spans of a darkness profile below mid-grey, split only where `gap`
    values above `light` in a row separate them (white letters inside a
    banner do not split it; the white between two boxes does)."""
    spans: list[tuple[int, int]] = []
    start, end, lights = -1, 0, 0
    for i, value in enumerate([*profile, *[255] * gap]):
        if value < 128:
            start = i if start < 0 else start
            lights, end = 0, i + 1
        elif start >= 0 and value > light:
            lights += 1
            if lights >= gap:
                spans.append((start, end))
                start = -1
    return spans


def _bands(image: Image.Image) -> Iterator[tuple[int, int, int, int]]:
    """Banners printed in inverse video: wide, short dark bands (cells of
    `BAND_CELL` pixels gathered row by row, their edges then found exactly)."""
    small = image.reduce(BAND_CELL)
    width, cells = small.width, small.tobytes()
    boxes: list[list[int]] = []  # [left, top, right, bottom] in cells
    growing: list[list[int]] = []
    for y in range(small.height):
        dark, continued = [0 if v < BAND_DARK else 255 for v in cells[y * width : (y + 1) * width]], []
        for left, right in _dark_runs(dark, light=200, gap=3):
            if right - left < 8 or dark[left:right].count(0) < 0.7 * (right - left):
                continue
            box = next((b for b in growing if left < b[2] and b[0] < right), None)
            if box is None:
                box = [left, y, right, y + 1]
                boxes.append(box)
            box[0], box[2], box[3] = min(box[0], left), max(box[2], right), y + 1
            continued.append(box)
        growing = continued
    for left, top, right, bottom in boxes:
        region = (
            max(0, (left - 1) * BAND_CELL),
            max(0, (top - 1) * BAND_CELL),
            min(image.width, (right + 1) * BAND_CELL),
            min(image.height, (bottom + 1) * BAND_CELL),
        )
        piece = image.crop(region)
        rows = _dark_runs(list(piece.resize((1, piece.height), Image.Resampling.BOX).tobytes()), light=200, gap=3)
        if not rows:
            continue
        first, last = max(rows, key=lambda r: r[1] - r[0])
        # Taller than a line of bold or blurred text (a banner is half a centimetre or more: 1.7% of
        # an A4 page), and not as tall as a dark photograph.
        if not max(image.size) * 0.016 <= last - first <= image.height * 0.08:
            continue
        band = piece.crop((0, first, piece.width, last))
        for start, end in _dark_runs(list(band.resize((band.width, 1), Image.Resampling.BOX).tobytes()), 200, 6):
            yield (region[0] + start, region[1] + first, region[0] + end, region[1] + last)


def uninverted(image: Image.Image) -> Image.Image:
    """The page with banners printed white on dark turned dark on white:
    Tesseract reads inverted text only now and then, and a party's banner
    ("VENDEDOR", "CLIENTE") is what says whose NIT follows."""
    bands = list(_bands(image))
    if not bands:
        return image
    page = image.copy()
    for box in bands:
        page.paste(ImageOps.invert(image.crop(box)), box[:2])
    return page


def _content_size(stream: pikepdf.Object, limit: int) -> int:
    """A content stream's inflated size, or `limit + 1` once it exceeds
    `limit`: Flate data is inflated only that far, so a bomb costs nothing."""
    filters = stream.get("/Filter")
    names = [str(f) for f in filters] if isinstance(filters, pikepdf.Array) else [str(filters)] if filters else []
    if names == ["/FlateDecode"] and "/DecodeParms" not in stream:
        inflater = zlib.decompressobj()
        try:
            size = len(inflater.decompress(stream.read_raw_bytes(), limit + 1))
        except zlib.error as exc:
            raise invalid("UNREADABLE_PDF", f"a page's content is damaged ({exc})") from exc
        return size
    return len(stream.read_bytes()) if len(stream.read_raw_bytes()) <= limit else limit + 1


def _check_pdf(checked: pikepdf.Pdf, limits: Limits) -> None:
    """Page count and each page's drawing instructions within limits."""
    if len(checked.pages) == 0:
        raise invalid("NO_PAGES", "the PDF has no pages")
    if len(checked.pages) > limits.max_pages:
        raise ResourceExhausted(f"{len(checked.pages)} pages; at most {limits.max_pages}", reason="TOO_MANY_PAGES")
    for number, page in enumerate(checked.pages, start=1):
        contents = page.obj.get("/Contents")
        streams = list(contents) if isinstance(contents, pikepdf.Array) else [contents] if contents is not None else []
        total = 0
        for stream in streams:
            if isinstance(stream, pikepdf.Stream):
                total += _content_size(stream, limits.max_page_content - total)
            if total > limits.max_page_content:
                raise ResourceExhausted(
                    f"page {number}'s content inflates beyond {limits.max_page_content // 2**20} MiB",
                    reason="PAGE_CONTENT_TOO_LARGE",
                    metadata={"page": str(number), "limit_bytes": str(limits.max_page_content)},
                )


def _check_pixels(width: int, height: int, limits: Limits, page: int) -> None:
    """Refuses an image by the size its header declares, before decoding it
    (Pillow's own guard only raises above twice its limit)."""
    if width * height > limits.max_pixels:
        raise ResourceExhausted(
            f"page {page} is {width} x {height} pixels; at most {limits.max_pixels:,} pixels are read",
            reason="IMAGE_TOO_LARGE",
            metadata={"page": str(page), "pixels": str(width * height), "limit_pixels": str(limits.max_pixels)},
        )


def _pages(
    content: bytes, kind: str, limits: Limits, password: str = ""
) -> Iterator[tuple[Image.Image | None, PageText]]:
    """Each page as (image or None, text layer)."""
    if kind == "application/pdf":
        # qpdf says precisely what is wrong with a file (PDFium's error state is per thread and goes stale).
        try:
            with pikepdf.open(io.BytesIO(content), password=password) as checked:
                _check_pdf(checked, limits)
        except pikepdf.PasswordError as exc:
            raise invalid("ENCRYPTED_PDF", "the PDF is encrypted: give its password", "password") from exc
        except pikepdf.PdfError as exc:
            raise invalid("UNREADABLE_PDF", f"the PDF cannot be opened: {_pdf_problem(exc)}") from exc
        try:
            document = pdfium.PdfDocument(content, password=password or None)
        except pdfium.PdfiumError as exc:
            raise invalid("UNREADABLE_PDF", f"the PDF cannot be opened: {exc}") from exc
        if len(document) > limits.max_pages:
            raise ResourceExhausted(f"{len(document)} pages; at most {limits.max_pages}", reason="TOO_MANY_PAGES")
        for index in range(len(document)):
            page = document[index]
            width, height = page.get_size()
            scale = limits.ocr_dpi / 72
            if width * height * scale * scale > limits.max_pixels:
                raise ResourceExhausted("a page is too large to render", reason="PAGE_TOO_LARGE")
            layer = text_layer(page)
            image = page.render(scale=scale if len(layer.text.strip()) < MIN_TEXT_LAYER else 150 / 72).to_pil()
            yield image, layer
        return
    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    try:
        opened = Image.open(io.BytesIO(content))
        for frames, frame in enumerate(ImageSequence.Iterator(opened), start=1):
            if frames > limits.max_pages:
                raise ResourceExhausted(f"more than {limits.max_pages} pages", reason="TOO_MANY_PAGES")
            _check_pixels(*frame.size, limits, frames)
            yield ImageOps.exif_transpose(frame.convert("RGB")), PageText("")
    except Image.DecompressionBombError as exc:
        raise ResourceExhausted("the image decodes to too many pixels", reason="IMAGE_TOO_LARGE") from exc
    except OSError as exc:
        raise invalid("UNREADABLE_IMAGE", f"the image cannot be decoded: {exc}") from exc


_QPDF_SOURCE = re.compile(r"^(stream )?<[^>]*>\s*(\([^)]*\))?:\s*")


def _pdf_problem(exc: pikepdf.PdfError) -> str:
    """qpdf's explanation without the name it gives the in-memory file (a Python object's repr)."""
    return _QPDF_SOURCE.sub("", str(exc)).strip() or "not a PDF"


_worker_engines: TesseractPool | None = None


def load_worker_engine(tessdata: Path = TESSDATA) -> None:
    """A worker process's setup: its one Tesseract engine."""
    global _worker_engines
    _worker_engines = TesseractPool(1, tessdata)


def read_in_worker(content: bytes, limits: Limits, password: str) -> tuple[Reading, list[PageResult], str]:
    """`read` with the worker's engine (see `load_worker_engine`)."""
    assert _worker_engines is not None, "load_worker_engine() was not run in this process"
    return read(content, _worker_engines, limits, password)


def read(
    content: bytes, engines: TesseractPool, limits: Limits = Limits(), password: str = ""
) -> tuple[Reading, list[PageResult], str]:
    """The fields of the document, a report per page, and its content type."""
    if len(content) > limits.max_bytes:
        raise ResourceExhausted(f"{len(content)} bytes; at most {limits.max_bytes}", reason="FILE_TOO_LARGE")
    kind = content_type(content)
    reading, pages = Reading(), []
    qr_seen, text_seen = [], []
    for number, (image, layer) in enumerate(_pages(content, kind, limits, password), start=1):
        started = time.perf_counter()
        skew, confidence, rotation = 0.0, 0.0, 0.0
        if image is not None:
            for code in zxingcpp.read_barcodes(image):
                payload = parse_dian_qr(code.text)
                if payload:
                    decoded = qr_fields(payload, number, qr_box(code.position, image.size))
                    qr_seen += decoded
                    for f in decoded:
                        reading.offer(f)
        if len(layer.text.strip()) >= MIN_TEXT_LAYER:
            source, found = Source.TEXT_LAYER, read_page(layer, Source.TEXT_LAYER, number)
        elif image is not None:
            source = Source.OCR
            # Grey levels stretched to black ink on white paper (a faint or dark scan reads like a clean
            # one); Tesseract reads grey levels, and turning one channel is a third of the work of three.
            grey = ImageOps.autocontrast(ImageOps.grayscale(image), cutoff=1)
            skew = deskew_angle(grey)
            straight = uninverted(grey.rotate(skew, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=255))
            with engines.engine() as engine:
                text, confidence = _recognise(engine.page, straight, limits, number)
                found = read_page(text, source, number)
                # A page scanned sideways or upside down yields few labelled fields: try the other turns.
                # A landscape image of a (portrait) invoice is sideways, so both quarter turns are always tried.
                landscape = straight.width > straight.height
                for turn in (90, 270, 180) if landscape else (180, 90, 270):
                    if len(found.fields) >= UPRIGHT_FIELDS and not (landscape and turn in (90, 270)):
                        break
                    candidate = _recognise(engine.page, straight.rotate(turn, expand=True), limits, number)
                    turned = read_page(candidate[0], source, number)
                    if len(turned.fields) > len(found.fields):
                        (text, confidence), rotation, found = candidate, float(turn), turned
                upright = straight.rotate(rotation, expand=True) if rotation else straight
                found = read_page(text, source, number, reread=hex_reread(engine.hexadecimal, upright))
        else:
            continue
        fields = found.fields
        if rotation:
            fields = [replace(f, box=turned_back(f.box, int(rotation))) if f.box else f for f in fields]
        text_seen += fields
        offer_page(reading, fields)
        reading.lines += found.lines
        pages.append(
            PageResult(
                number, Source.QR if qr_seen else source, rotation, skew, time.perf_counter() - started, confidence
            )
        )
    reading.warnings += disagreements(qr_seen, text_seen)
    return cross_check(reading), pages, kind
