"""Bad crawl files for the fault suite, built at test time from real records of the bundled sample.

Nothing binary is stored: each builder returns the bytes of one file, made from the real Common
Crawl records of `resiliparse_warcfile.warc.gz` (CC-MAIN-2020-34, 16 HTML pages, one gzip member
per record) and real pages of the other sample files, cut, spliced, re-encoded or relabelled.
Hand-written records follow WARC/1.0 byte for byte (`warc_record`), so they can also be broken.
"""
from __future__ import annotations

import gzip
import io
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastwarc.warc import ArchiveIterator, WarcRecordType

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "crawl"
GOOD = SAMPLE / "resiliparse_warcfile.warc.gz"
GOOD_PAGES = 16  # HTML responses in GOOD, every one with main text
FORUM = SAMPLE / "forum_pages.warc.gz"


# --- real records --------------------------------------------------------------------------

@cache
def members(path: Path = GOOD) -> tuple[bytes, ...]:
    """The gzip members of a sample file, one per record, as stored."""
    raw = path.read_bytes()
    starts = [r.stream_pos for r in ArchiveIterator(io.BytesIO(raw), parse_http=False)]
    return tuple(raw[a:b] for a, b in zip(starts, starts[1:] + [len(raw)]))


def plain(path: Path = GOOD) -> list[bytes]:
    """The records of a sample file, uncompressed."""
    return [gzip.decompress(m) for m in members(path)]


@cache
def good_doc_ids(path: Path = GOOD) -> frozenset[str]:
    with open(path, "rb") as fh:
        return frozenset(r.record_id for r in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True)
                         if (r.http_content_type or "").startswith("text/html"))


def response_index(k: int, path: Path = GOOD) -> int:
    """Index in members() of the k-th response record."""
    types = [r.record_type for r in ArchiveIterator(io.BytesIO(path.read_bytes()), parse_http=False)]
    return [i for i, t in enumerate(types) if t == WarcRecordType.response][k]


@cache
def real_page(url_part: str, path: Path = FORUM) -> tuple[bytes, str]:
    """(HTML payload, its Content-Type) of the first response whose URL contains url_part."""
    with open(path, "rb") as fh:
        for r in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True):
            if url_part in r.headers.get("WARC-Target-URI", ""):
                return r.reader.read(), r.http_content_type
    raise LookupError(url_part)


# --- hand-written records -------------------------------------------------------------------

def warc_record(wtype: str, block: bytes, uri: bytes | None = b"http://example.com/", *,
                content_length: int | None = None, msgtype: bool = True) -> bytes:
    """One WARC/1.0 record; `content_length` can lie about the block."""
    rid = uuid.uuid5(uuid.NAMESPACE_URL, f"{wtype} {uri!r} {block!r}")
    head = [b"WARC-Type: " + wtype.encode(), b"WARC-Record-ID: <urn:uuid:%s>" % str(rid).encode(),
            b"WARC-Date: 2024-06-01T00:00:00Z"]
    if uri is not None:
        head.append(b"WARC-Target-URI: " + uri)
    if msgtype:
        head.append(b"Content-Type: application/http; msgtype=response")
    head.append(b"Content-Length: %d" % (len(block) if content_length is None else content_length))
    return b"WARC/1.0\r\n" + b"\r\n".join(head) + b"\r\n\r\n" + block + b"\r\n\r\n"


def http_response(body: bytes, content_type: bytes | None = b"text/html; charset=utf-8") -> bytes:
    head = b"HTTP/1.1 200 OK\r\n" + (b"Content-Type: " + content_type + b"\r\n" if content_type is not None else b"")
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def response(uri: bytes, body: bytes, content_type: bytes | None = b"text/html; charset=utf-8") -> bytes:
    return warc_record("response", http_response(body, content_type), uri)


def gz(*records: bytes) -> bytes:
    """Each record its own gzip member, as WARC writers do."""
    return b"".join(gzip.compress(r, mtime=0) for r in records)


def page_html(text: str) -> bytes:
    return f"<html><head><title>{text[:20]}</title></head><body><main><p>{text}</p></main></body></html>".encode()


# --- the bad files --------------------------------------------------------------------------

def truncated_mid_record() -> bytes:
    """GOOD cut in the middle of the 8th page's gzip member."""
    i = response_index(7)
    m = members()
    return b"".join(m[:i]) + m[i][: len(m[i]) // 2]


def truncated_in_gzip_header() -> bytes:
    """GOOD cut 6 bytes into the gzip member of the 9th page: fastwarc stops there without a word."""
    i = response_index(8)
    m = members()
    return b"".join(m[:i]) + m[i][:6]


def garbage_member_mid_file() -> bytes:
    """A gzip member holding text that is not a WARC record, between pages 10 and 11."""
    i = response_index(10)
    m = members()
    junk = gzip.compress(b"this is not a WARC record, just a log line that ended up here\n" * 50, mtime=0)
    return b"".join(m[:i]) + junk + b"".join(m[i:])


def raw_garbage_mid_file() -> bytes:
    """Bytes that are not gzip at all between two gzip members (a bad splice)."""
    i = response_index(5)
    m = members()
    return b"".join(m[:i]) + b"\x00\xffGARBAGE\x13\x37" * 300 + b"".join(m[i:])


def garbage_mid_plain_file() -> bytes:
    """Uncompressed WARC with junk lines between two records."""
    i = response_index(3)
    p = plain()
    return b"".join(p[:i]) + b"junk line without a WARC header\r\n" * 40 + b"".join(p[i:])


def lying_content_length() -> bytes:
    """A record whose Content-Length claims 10 MB: read as is, it swallows every record after it."""
    i = response_index(4)
    m = members()
    liar = gzip.compress(warc_record("response", http_response(page_html("short page")), content_length=10_000_000),
                         mtime=0)
    return b"".join(m[:i]) + liar + b"".join(m[i:])


def charsets() -> bytes:
    """Non-UTF-8 pages with right, wrong, unknown, garbled and missing charset labels (all real pages)."""
    ru, _ = real_page("01spb.ru", GOOD)  # real windows-1251 page
    de, _ = real_page("hifi-forum.de/viewthread-84-29928")  # real UTF-8 German page
    de_1252 = de.decode("utf-8").encode("cp1252", "xmlcharrefreplace")
    recs = [
        response(b"http://01spb.ru/right-label", ru, b"text/html; charset=windows-1251"),
        response(b"http://01spb.ru/labelled-utf-8", ru, b"text/html; charset=utf-8"),
        response(b"http://01spb.ru/unknown-label", ru, b"text/html; charset=x-no-such-charset"),
        response(b"http://01spb.ru/garbled-label", ru, b"text/html; charset=\xff\xfe\x00"),
        response(b"http://01spb.ru/no-label", ru, b"text/html"),
        response(b"http://hifi-forum.de/cp1252-labelled-utf-8", de_1252, b"text/html; charset=utf-8"),
        response(b"http://hifi-forum.de/utf-8-labelled-utf-16", de, b"text/html; charset=utf-16"),
        response(b"http://hifi-forum.de/cp1252-labelled-latin-1", de_1252, b"text/html; charset=iso-8859-1"),
    ]
    return gz(*recs)


CHARSET_PAGES = 8
RU_WORD = "пожарной"  # in the main text of the real 01spb.ru page
DE_WORD = "über"  # in the main text of the real hifi-forum.de page


def big_page(mb: int = 20) -> bytes:
    """A real forum page whose thread is repeated to `mb` MB, then a normal real page."""
    html, _ = real_page("stackexchange.com")
    head, _, rest = html.partition(b"<body")
    inner, _, tail = rest.partition(b"</body>")
    reps = mb * 2**20 // len(inner) + 1
    body = head + b"<body" + inner * reps + b"</body>" + tail
    return gz(response(b"https://math.stackexchange.com/q/huge", body)) + members()[response_index(0)]


def empty_and_non_html() -> bytes:
    """Empty, blank and non-HTML records (real JSON responses, a PDF, an image labelled HTML), then a real page."""
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    recs = [
        response(b"http://example.com/empty-body", b""),
        response(b"http://example.com/blank", b"  \r\n<!-- nothing here -->\n  "),
        response(b"http://example.com/no-content-type", page_html("no content type header"), None),
        warc_record("response", b"", b"http://example.com/empty-block"),
        response(b"http://example.com/doc.pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
                 b"application/pdf"),
        response(b"http://example.com/image-labelled-html", png, b"text/html"),
    ]
    post = members(SAMPLE / "warcio_post-test.warc.gz")  # 3 real application/json responses
    return gz(*recs) + b"".join(post) + members()[response_index(0)]


def all_script() -> bytes:
    """A real page reduced to its <script> elements, next to a real page."""
    html, _ = real_page("06.live-radsport.ch/fahrerstatistik", GOOD)
    scripts = b"".join(re.findall(rb"(?is)<script.*?</script>", html))
    half = len(scripts) // 2
    body = b"<html><head>" + scripts[:half] + b"</head><body>" + scripts[half:] + b"</body></html>"
    return gz(response(b"http://06.live-radsport.ch/only-scripts", body, b"text/html; charset=iso-8859-1")) + \
        members()[response_index(0)]


ODD_URIS = [
    b"http://example.com/caf%C3%A9?q=%E2%9C%93&x=%zz",  # percent-encoded UTF-8, and a bad escape
    "http://пример.рф/путь".encode(),  # raw UTF-8 IDN
    b"http://exa\xe9mple.com/caf\xe9",  # raw latin-1 bytes in a header (not UTF-8)
    b"<http://wget.example.org/wrapped>",  # wget wraps the URI in <...>
    b"",  # empty
    None,  # no WARC-Target-URI at all
    b"http://example.com/a path with spaces/",
    b"javascript:void(0)",
    b"http://example.com/" + b"a" * 5000,
    b"http://[::1]:8080/ipv6",
    b"HTTP://EXAMPLE.COM/UPPER",
    b"http://xn--e1afmkfd.xn--p1ai/punycode",
]


def odd_urls() -> bytes:
    html, _ = real_page("soldaini.net/facts", SAMPLE / "dolma_warc_sample-0000.warc.gz")
    return gz(*(warc_record("response", http_response(html + b"<!-- %d -->" % i), uri)
                for i, uri in enumerate(ODD_URIS)))


def not_a_warc() -> bytes:
    """A real HTML page saved under a WARC name."""
    return real_page("soldaini.net/facts", SAMPLE / "dolma_warc_sample-0000.warc.gz")[0]


def gzipped_html() -> bytes:
    return gzip.compress(not_a_warc(), mtime=0)


def not_gzip() -> bytes:
    """gzip's magic bytes, then junk."""
    return b"\x1f\x8b\x08\x00 definitely not a gzip member" * 10


def gzip_of_nothing() -> bytes:
    return gzip.compress(b"", mtime=0)


@dataclass(frozen=True)
class Bad:
    name: str  # file name
    fault: str  # the fault, in words, for docs/reliability.md
    build: Callable[[], bytes]
    status: str  # expected crawl_files status
    reason: str  # regex the crawl_files error must match ("" when status is ok)
    docs: int  # documents kept
    expected: str  # what must happen, in words


_GOOD_KEPT = f"all {GOOD_PAGES} real pages kept"
CASES = [
    Bad("truncated-mid-record.warc.gz", "gzip file cut short inside a record", truncated_mid_record, "error",
        r"cut short", 8,
        "status error 'cut short'; the 7 pages before the cut and the cut page (flagged truncated) kept"),
    Bad("truncated-in-gzip-header.warc.gz", "gzip file cut short inside a gzip member header",
        truncated_in_gzip_header, "error", r"truncated gzip", 8,
        "status error 'truncated gzip'; the 8 whole pages kept"),
    Bad("garbage-member.warc.gz", "a gzip member of garbage text between two records", garbage_member_mid_file,
        "error", r"not a WARC record.*resumed", GOOD_PAGES, f"status error naming the garbage; {_GOOD_KEPT}"),
    Bad("raw-garbage.warc.gz", "non-gzip garbage bytes between two gzip members", raw_garbage_mid_file,
        "error", r"corrupt gzip.*resumed", GOOD_PAGES, f"status error 'corrupt gzip'; {_GOOD_KEPT}"),
    Bad("garbage-plain.warc", "junk lines between two records of an uncompressed WARC", garbage_mid_plain_file,
        "error", r"not a WARC record.*resumed", GOOD_PAGES, f"status error naming the junk; {_GOOD_KEPT}"),
    Bad("lying-length.warc.gz", "a record whose Content-Length claims 10 MB it does not have", lying_content_length,
        "error", r"cut short.*resumed", GOOD_PAGES + 1,
        f"status error 'cut short'; the liar's page (flagged truncated) and {_GOOD_KEPT} after it"),
    Bad("charsets.warc.gz", "non-UTF-8 pages with right, wrong, unknown, garbled and missing charset labels",
        charsets, "ok", "", CHARSET_PAGES,
        "status ok; all 8 pages kept; right, unknown, garbled and missing labels decode to the real words"),
    Bad("empty-and-non-html.warc.gz", "empty, blank, header-less and non-HTML records", empty_and_non_html,
        "ok", "", 2,
        "status ok; empty pages counted in skipped_empty, non-HTML in skipped_non_html; the real page kept"),
    Bad("all-script.warc.gz", "an HTML page that is nothing but <script>", all_script, "ok", "", 1,
        "status ok; the script page counted in skipped_empty; the real page next to it kept"),
    Bad("odd-urls.warc.gz", "odd target URIs: percent escapes, raw UTF-8 and latin-1 bytes, none, empty, 5000 chars",
        odd_urls, "ok", "", len(ODD_URIS), f"status ok; all {len(ODD_URIS)} pages kept with a URL string and a domain"),
    Bad("zero-bytes.warc.gz", "a zero-byte .warc.gz file", lambda: b"", "error", r"empty file", 0,
        "status error 'empty file'"),
    Bad("zero-bytes.warc", "a zero-byte .warc file", lambda: b"", "error", r"empty file", 0,
        "status error 'empty file'"),
    Bad("page.warc", "an HTML page saved as .warc", not_a_warc, "error", r"not a WARC file", 0,
        "status error 'not a WARC file'"),
    Bad("page-html.warc.gz", "a gzipped HTML page saved as .warc.gz", gzipped_html, "error", r"not a WARC file", 0,
        "status error 'not a WARC file'"),
    Bad("not-gzip.warc.gz", "gzip magic bytes followed by junk", not_gzip, "error", r"not gzip / truncated gzip", 0,
        "status error 'not gzip / truncated gzip'"),
    Bad("gzip-of-nothing.warc.gz", "a valid gzip file that holds nothing", gzip_of_nothing, "error",
        r"no WARC records", 0, "status error 'no WARC records'"),
]


def write(folder: Path, case: Bad) -> Path:
    path = folder / case.name
    path.write_bytes(case.build())
    return path
