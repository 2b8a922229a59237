"""HTML -> (title, main text) with resiliparse, plus the registered domain of a URL."""
from __future__ import annotations

from functools import lru_cache

import tldextract
from resiliparse.extract.html2text import extract_plain_text
from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from resiliparse.parse.html import HTMLTree
from resiliparse.parse.lang import detect_fast

# suffix_list_urls=() pins tldextract to the Public Suffix List snapshot it ships: no network.
# Private suffixes count (user.github.io and other.github.io are different sites).
_TLD = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True)


def decode(body: bytes, charset: str | None) -> str:
    """The declared charset; detected when there is none or Python does not know the label (x-foo, garbage)."""
    if charset:
        try:
            return bytes_to_str(body, charset)
        except (LookupError, ValueError, TypeError):
            pass
    return bytes_to_str(body, detect_encoding(body))


def html_to_text(body: bytes, charset: str | None, *, main_content: bool = True) -> tuple[str, str]:
    """Return (title, main text). Boilerplate (nav, footers, ads) is dropped when main_content."""
    tree = HTMLTree.parse(decode(body, charset))
    text = extract_plain_text(tree, main_content=main_content, alt_texts=False, noscript=False)
    return (tree.title or "").strip(), text.strip()


@lru_cache(maxsize=65536)
def registered_domain(host_or_url: str) -> str:
    """Public-suffix-aware registered domain ("forums.bbc.co.uk" -> "bbc.co.uk"); host if none."""
    ext = _TLD(host_or_url)
    return (ext.top_domain_under_public_suffix or ext.domain or host_or_url).lower()


def language(text: str, max_chars: int = 4000) -> str:
    """The main text's language (ISO 639-1) from its first `max_chars` characters; "unknown" if unsure."""
    lang, _ = detect_fast(text[:max_chars]) if text.strip() else ("unknown", 0)
    return lang or "unknown"
