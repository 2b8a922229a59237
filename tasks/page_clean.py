"""Rule-based page pre-cleaning and chunking, run before the extraction LLM sees a page.

Main-text extraction at ingest already drops most markup; what is left on forum and Q&A pages
is per-post chrome ("Reply", "Quote", "Link to comment", "Posts: 3", "Joined: ..."), cookie
and sign-in banners, vote counters and text quoted again in later posts. Every token of that
costs LLM time and tempts a small model to copy it, so it goes first. The rules keep code:
indentation is preserved and lines of brackets or punctuation are kept.

Per-line Python rules are fine here: cleaning a page costs microseconds, its LLM call seconds.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

CLEAN_VERSION = "2"  # bump when a rule changes: it is part of the extract fingerprint

# Words that make up navigation/action chrome; a short line made only of these is dropped.
NAV_WORDS = frozenset("""
reply replies quote quoted share shared sharing login logout log in out sign signin signup up register
report like likes liked unlike permalink link links to comment comments on other sites site post posts
posted jump content skip main back top menu home next previous prev page edit edited delete flag follow
following followers unfollow subscribe subscribed unsubscribe print email bookmark bookmarked upvote
downvote vote votes helpful unhelpful show hide more less load read see view expand collapse reveal
hidden contents select all copy copied code create new account an a or and the this improve cite add
forgot password remember me navigation search go toggle sidebar close open tweet facebook twitter
whatsapp linkedin pinterest reddit mail permalink options quick mark as solved accepted answer answers
report abuse translate notifications message messages profile settings help faq terms privacy policy
top bottom scroll thread threads topic topics forum forums community members online guest guests
now recommended author participant create
""".split())
# A nav-only line must contain at least one of these (so "on the" alone is not mistaken for chrome).
NAV_CORE = frozenset("""
reply quote share login logout log signin signup sign register report like permalink comment jump skip menu edit delete
flag follow subscribe unsubscribe print email bookmark upvote downvote vote helpful show load read view
expand collapse reveal copy improve cite forgot navigation search toggle tweet facebook twitter whatsapp
linkedin pinterest mark translate notifications profile scroll post create recommended author
""".split())

_META = re.compile(
    r"^(posts|joined|join date|location|has thanked|been thanked|thanked|reputation|rep|messages|"
    r"reaction score|points|member since|registered|last seen|last active|karma|credits|threads|"
    r"likes received|solutions|trophies|age|gender|status)\s*:?\s*.{0,40}$", re.I)
_COOKIE = re.compile(r"\bcookies?\b.*\b(use|using|uses|accept|consent|settings|policy|continue|agree|"
                     r"experience|improve|browsing|preferences)\b|\b(accept|reject|manage)\b.*\bcookies?\b", re.I)
_LEGAL = re.compile(r"(all rights reserved|©|\(c\) \d{4}|powered by\b|terms of (use|service)|privacy policy|"
                    r"cc by-sa \d|browse other questions tagged|not the answer you're looking for|"
                    r"^viewing \d+ posts? - |^edited by\b|^last edited by\b|^this (topic|thread) (is|has been) "
                    r"(closed|locked|marked)|is closed to new (topics|replies)|you need to be a member|"
                    r"already have an account|create an account or sign in|you must (be )?log(ged)? ?in|"
                    r"^\s*(loading|please wait)\s*\W*$|^important information$|^sign up for (a|an) (new |free )?account)", re.I)
_BULLET = re.compile(r"^[\s•·▪‣◦∙*\-–—>|]+")
_SYMBOLS_ONLY = re.compile(r"^[\s•·▪‣◦∙×✕✖|\-–—_=~*#^.,:;!?'\"`]*$")
_BULLET_NUMBER = re.compile(r"^\s*[•·▪‣◦∙]\s*[+\-]?\d[\d,.kK]*\s*$")  # comment vote counters
_SENTENCE_END = re.compile(r"[.?!:)\]}$]\s*$")
_CODE_CHARS = re.compile(r"[<>{}()\[\];=/\\$^]")
_WORD = re.compile(r"[^\W\d_]+", re.U)


@dataclass(frozen=True)
class CleanParams:
    """Limits for cleaning and chunking (all in characters; ~4 characters per token in English)."""

    chunk_chars: int = 4000  # ~1000 tokens: fits a 4096-token slot with the few-shot prefix and the reply
    overlap_chars: int = 300  # context carried into the next chunk so a pair split at a cut survives
    max_chunks: int = 6  # chunks sent per page at most: the ones with the most question-and-answer signs
    min_chars: int = 80  # a page shorter than this after cleaning is not sent to the LLM
    edge_min_chars: int = 20  # short leading/trailing lines without sentence punctuation are dropped
    max_line_repeats: int = 3  # a short line seen this often on one page is chrome
    require_question: bool = True  # a page with no question sign in its title or text is not sent

    def __post_init__(self) -> None:
        if not 0 <= self.overlap_chars <= self.chunk_chars // 2:
            raise ValueError("overlap_chars must be between 0 and chunk_chars / 2")
        if self.chunk_chars < 200 or self.max_chunks < 1:
            raise ValueError("chunk_chars must be >= 200 and max_chunks >= 1")

    def as_dict(self) -> dict:
        return {**self.__dict__, "clean_version": CLEAN_VERSION}


def is_nav_line(line: str) -> bool:
    words = [w.lower() for w in _WORD.findall(line)]
    if not words or len(words) > 8 or len(line) > 80:
        return False
    return all(w in NAV_WORDS for w in words) and any(w in NAV_CORE for w in words)


def is_boilerplate(line: str) -> bool:
    """A single stripped line that carries no page content."""
    s = line.strip()
    if not s:
        return False
    if _SYMBOLS_ONLY.match(s) and not re.search(r"[{}()\[\];<>/\\]", s):
        return True  # bullets, separators, "×" close buttons; code punctuation is kept
    if _BULLET_NUMBER.match(s):
        return True
    core = _BULLET.sub("", s)
    if is_nav_line(core):
        return True
    # "Posts: 3", "Joined: 2019-04-16": user badges carry a number ("Location:" is the exception)
    if len(core) <= 60 and _META.match(core) and (re.search(r"\d", core) or core.lower().startswith("location")):
        return True
    if len(core) <= 300 and (_COOKIE.search(core) or _LEGAL.search(core)):
        return True
    return False


def clean_text(text: str, params: CleanParams = CleanParams()) -> str:
    """The page with chrome, banners, repeated and empty edge lines removed."""
    lines = [ln.rstrip().replace("\u00a0", " ") for ln in (text or "").replace("\r\n", "\n").split("\n")]
    counts = Counter(ln.strip() for ln in lines if ln.strip())
    kept: list[str] = []
    seen_long: set[str] = set()
    for ln in lines:
        s = ln.strip()
        if not s:
            if kept and kept[-1] != "":
                kept.append("")
            continue
        if is_boilerplate(s):
            continue
        # Short lines repeated all over the page (user badges, "Participant") are chrome;
        # repeated code lines ("</div>", "}") are not, so anything code-like is exempt.
        if (len(s) <= 80 and counts[s] >= params.max_line_repeats and _WORD.search(s)
                and not _CODE_CHARS.search(s)):
            continue
        # A long line seen before is a quote of an earlier post: keep the first copy only.
        if len(s) > 80:
            if s in seen_long:
                continue
            seen_long.add(s)
        kept.append(ln)
    # Trim short fragments at the edges ("Forums", "136", "Post Reply") but keep real sentences.
    def edge_noise(s: str) -> bool:
        s = s.strip()
        return not s or (len(s) < params.edge_min_chars and not _SENTENCE_END.search(s))

    while kept and edge_noise(kept[0]):
        kept.pop(0)
    while kept and edge_noise(kept[-1]):
        kept.pop()
    return _dedent_common("\n".join(kept)).strip("\n")


def _dedent_common(text: str) -> str:
    """Remove indentation shared by every line (list-rendered forum posts), keep relative indent."""
    lines = text.split("\n")
    indents = [len(ln) - len(ln.lstrip(" ")) for ln in lines if ln.strip()]
    cut = min(indents, default=0)
    return "\n".join(ln[cut:] for ln in lines) if cut else text


def _split_long_line(line: str, limit: int) -> list[str]:
    """Cut a line longer than `limit` at whitespace where possible."""
    pieces = []
    while len(line) > limit:
        cut = line.rfind(" ", limit // 2, limit)
        cut = cut if cut > 0 else limit
        pieces.append(line[:cut])
        line = line[cut:].lstrip(" ")
    pieces.append(line)
    return pieces


def chunk_text(text: str, chunk_chars: int, overlap_chars: int, max_chunks: int | None = None) -> list[str]:
    """Split at line boundaries into chunks of at most `chunk_chars` characters.

    Each chunk after the first starts with the end of the previous chunk, at most
    `overlap_chars` characters of it (whole lines; a word-aligned piece of the last line when that
    line alone is longer), so a question at the end of one chunk is seen together with its answer
    at the start of the next. Lines longer than the room left after the overlap are cut at
    whitespace first. No chunk starts or ends with blank lines.
    """
    if not text.strip():
        return []
    if len(text) <= chunk_chars:
        return [text]
    limit = max(1, chunk_chars - overlap_chars - 1)
    lines = [piece for ln in text.split("\n") for piece in _split_long_line(ln, limit)]
    chunks: list[str] = []
    current: list[str] = []
    size = -1  # length of "\n".join(current)
    for line in lines:
        if size + len(line) + 1 > chunk_chars and current:
            while current and not current[-1].strip():
                current.pop()
            chunks.append("\n".join(current))
            if max_chunks and len(chunks) >= max_chunks:
                return chunks
            current = _tail(current, overlap_chars)
            size = len("\n".join(current)) if current else -1
        if not current and not line.strip():
            continue
        current.append(line)
        size += len(line) + 1
    while current and not current[-1].strip():
        current.pop()
    if current:
        chunks.append("\n".join(current))
    return chunks


def _tail(lines: list[str], budget: int) -> list[str]:
    """The end of a chunk that the next one repeats: whole trailing lines within `budget`, or
    a word-aligned suffix of the last line when it alone is longer."""
    tail: list[str] = []
    size = -1
    for ln in reversed(lines):
        if size + len(ln) + 1 > budget:
            break
        tail.insert(0, ln)
        size += len(ln) + 1
    if not tail and budget > 0 and lines:
        piece = lines[-1][-budget:]
        if len(piece) < len(lines[-1]) and " " in piece:
            piece = piece[piece.index(" ") + 1:]
        tail = [piece]
    while tail and not tail[0].strip():
        tail.pop(0)
    return tail


# Signs that a chunk holds a question and its answer (not only page chrome or prose).
_ASKS = re.compile(r"[\w)\]$]\?\s*$|[\w)\]$]\?(?-i:\s+[A-Z(])|^\s*(exercise|problem|question|example|task|q)\s*[\d.:)#-]|"
                   r"^\s*(find|compute|calculate|prove|show|determine|solve|evaluate|how|what|why|which|is|can)\b|"
                   r"\bi(\s+am|'m)?\s+(need|want|trying)\s+to\b|\bis there a way\b",
                   re.I | re.M)
_ANSWERS = re.compile(r"^\s*(solution|answer|proof|hint|a)\s*[\d.:)-]|\b(because|therefore|so the|thus|hence|"
                      r"you (can|need|should)|try|this (is|means|works)|the answer)\b", re.I | re.M)
MAX_PAGE_CHUNKS = 64  # a page is never cut into more candidates than this (the rest is not read)


def qa_signal(chunk: str) -> int:
    """How much a chunk looks like a question with its answer: asks, answer markers, and text
    after the first ask (a question at the very end of a chunk has its answer elsewhere)."""
    asks = list(_ASKS.finditer(chunk))
    if not asks:
        return 0
    after = len(chunk) - asks[0].end()
    return min(len(asks), 4) + min(len(_ANSWERS.findall(chunk)), 4) + (3 if after >= 200 else 0)


def select_chunks(chunks: list[str], k: int) -> list[int]:
    """Indexes of the `k` chunks with the strongest question-and-answer signal, in page order
    (ties: the earlier chunk), so a long page sends its exercises and replies, not its start."""
    if len(chunks) <= k:
        return list(range(len(chunks)))
    ranked = sorted(range(len(chunks)), key=lambda i: (-qa_signal(chunks[i]), i))
    return sorted(ranked[:k])


def prepare_page(text: str, params: CleanParams = CleanParams(),
                 title: str = "") -> tuple[list[tuple[int, str]], str | None]:
    """(chunk number, text) of the chunks of one page worth sending, or ([], reason) when none is.

    With `require_question`, a page whose title and chunks show no question sign at all (no
    question mark, exercise or problem marker, question word) costs no LLM call: on CPU one call
    is many seconds, and such a page rarely holds a pair."""
    cleaned = clean_text(text, params)
    if len(cleaned) < params.min_chars:
        return [], f"too short after cleaning ({len(cleaned)} < {params.min_chars} chars)"
    chunks = chunk_text(cleaned, params.chunk_chars, params.overlap_chars, MAX_PAGE_CHUNKS)
    chosen = select_chunks(chunks, params.max_chunks)
    if params.require_question and not (_ASKS.search(title or "") or any(qa_signal(chunks[i]) for i in chosen)):
        return [], "no question on the page (no question mark, exercise or problem marker)"
    return [(i, chunks[i]) for i in chosen], None
