"""Small, named cleaning steps shared by the page parsers and the item loader.

Each function takes plain values and returns plain values: no network, no settings,
no database, no clock. The tables in this module are the specification for markets,
symbols, infoCodes, times and source lines; ``tests/test_processors.py`` tests them.
"""

from __future__ import annotations

import html
import re
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

# The site's time zone. Instants are always returned at this fixed offset.
SITE_TZ = timezone(timedelta(hours=8))
SHANGHAI = ZoneInfo("Asia/Shanghai")
SITE_TITLE = "金融消息"

# --- text -------------------------------------------------------------------


def clean_text(text: str | None) -> str:
    """Trim (incl. U+3000 and no-break spaces) and collapse inner whitespace runs."""
    if not text:
        return ""
    return " ".join(text.split())


def clean_title(text: str | None) -> str | None:
    """Decode entities and trim; the empty title becomes None."""
    title = clean_text(html.unescape(text or ""))
    return title or None


def parse_flag(value: object) -> bool:
    """A spider argument's yes/no: ``1``, ``true``, ``yes`` and ``on`` mean yes."""
    return str(value).strip().lower() in ("1", "true", "yes", "on")


# --- time -------------------------------------------------------------------

# Exact formats first: strptime costs microseconds, dateparser milliseconds (docs/performance.md).
_TIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S %z",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S%z",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M %z",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%Y年%m月%d日 %H:%M:%S",
    "%Y年%m月%d日 %H:%M",
)
# The rendered page's visible time: "(GMT+8, Asia/Shanghai, CST) 2022-04-27 15:22:47".
_ZONE_PREFIX = re.compile(r"^\s*\([^)]*\)\s*")


def to_site_tz(moment: datetime) -> datetime:
    """The same instant at +08:00; a naive time is read as Asia/Shanghai wall time."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=SHANGHAI)
    return moment.astimezone(SITE_TZ)


def parse_site_time(text: str | None) -> datetime | None:
    """Parse a source time into an aware datetime at +08:00, or None if there is none.

    Known formats go through ``strptime``; ``dateparser`` (Asia/Shanghai, zh+en) reads
    anything else. An offset-only value such as ``" +0800"`` means no time at all.
    """
    value = _ZONE_PREFIX.sub("", clean_text(text))
    if not value or re.fullmatch(r"[+-]\d{2}:?\d{2}", value):
        return None
    try:  # ISO 8601 and the generator's "2022-04-27 15:22:47 +0800", in C
        return to_site_tz(datetime.fromisoformat(value))
    except ValueError:
        pass
    for fmt in _TIME_FORMATS:
        try:
            return to_site_tz(datetime.strptime(value, fmt))
        except ValueError:
            continue
    return _dateparser_time(value)


def _dateparser_time(value: str) -> datetime | None:
    import dateparser  # imported lazily: it costs ~0.3 s and is rarely needed

    parsed = dateparser.parse(
        value,
        languages=["zh", "en"],
        settings={
            "TIMEZONE": "Asia/Shanghai",
            "RETURN_AS_TIMEZONE_AWARE": True,
            "PREFER_DATES_FROM": "past",
        },
    )
    return to_site_tz(parsed) if parsed else None


# --- identity -----------------------------------------------------------------

_INFO_CODE = re.compile(r"^(?:(?P<prefix>[A-Z]{2})(?P<digits>\d{18})|(?P<bare>\d{18}))$")
# eastmoney.com article URLs: /a/<id>.html and /news/<column>,<id>.html
_EASTMONEY_ARTICLE = re.compile(r"eastmoney\.com/(?:a/|news/\d+,)(\d{18})\.html")


def normalise_info_code(value: str | None) -> str | None:
    """``NW`` + 18 digits stays, bare 18 digits become ``NW…``, other prefixes stay.

    Anything else is not an infoCode and gives None: never guess.
    """
    match = _INFO_CODE.match((value or "").strip())
    if not match:
        return None
    if match["bare"]:
        return "NW" + match["bare"]
    return match["prefix"] + match["digits"]


def info_code_from_share_link(url: str | None) -> str | None:
    """The ``infoCode=`` of a NewsShare link."""
    if not url or "infoCode=" not in url:
        return None
    for value in parse_qs(urlsplit(url).query).get("infoCode", []):
        code = normalise_info_code(value)
        if code:
            return code
    return None


def info_code_from_article_link(url: str | None) -> str | None:
    """The 18-digit id of an eastmoney.com article URL, as ``NW…``."""
    match = _EASTMONEY_ARTICLE.search(url or "")
    return "NW" + match[1] if match else None


def info_code_from_name(name: str | None) -> str | None:
    """The infoCode in a post's file or URL name (``2022-04-27-NW….md``, ``….html``)."""
    if not name:
        return None
    stem = name.rsplit("/", 1)[-1]
    stem = re.sub(r"\.(?:md|markdown|html?)$", "", stem)
    stem = re.sub(r"\.[0-9a-f]{7}$", "", stem)  # corpus versions: <stem>.<commit7>.md
    stem = re.sub(r"^\d{4}-\d{2}-\d{2}-", "", stem).lstrip("-")
    return normalise_info_code(stem)


# --- outlet and source ----------------------------------------------------------

_SOURCE_LINE = re.compile(r"^[（(]?\s*(?:文章)?来源\s*[:：]\s*(?P<source>.*?)\s*[)）]?$")


def outlet_from_tag(tag: str | None) -> str | None:
    """The post's tag minus 新闻 (证券日报网新闻 → 证券日报网)."""
    tag = clean_text(tag)
    if tag.endswith("新闻") and len(tag) > 2:
        tag = tag[:-2]
    return tag or None


def outlet_from_backlink(text: str | None) -> str | None:
    """The X of a 返回X新闻 back-link; None for 返回首页 and other links."""
    text = clean_text(text)
    if not text.startswith("返回") or text == "返回首页":
        return None
    return outlet_from_tag(text[2:])


def parse_source_line(text: str | None) -> str | None:
    """``（文章来源：证券日报网）`` → ``证券日报网``; text that is not a source line → None."""
    match = _SOURCE_LINE.match(clean_text(text))
    if not match:
        return None
    return match["source"] or None


# --- securities ---------------------------------------------------------------

# Eastmoney market id -> (kind, symbol suffix): docs/site.md, README "Stock codes".
MARKETS: dict[str, tuple[str, str]] = {
    "0": ("stock", ".SZ"),  # Shenzhen; Beijing codes get .BJ; kind by code (_CODE_KINDS)
    "1": ("stock", ".SH"),  # Shanghai; kind by code (_CODE_KINDS)
    "116": ("stock", ".HK"),
    "128": ("stock", ".HK"),
    "105": ("stock", ".O"),  # NASDAQ
    "106": ("stock", ".N"),  # NYSE
    "107": ("stock", ".A"),  # NYSE American (AMEX)
    "155": ("stock", ".L"),  # London
    "90": ("board", ""),  # Eastmoney boards BKxxxx: sectors and concepts
    "100": ("index", ".GI"),  # global indices
    "8": ("future", ".CFE"),
    "113": ("future", ".SHF"),
    "114": ("future", ".DCE"),
    "115": ("future", ".CZC"),
    "142": ("future", ".INE"),
    "225": ("future", ".GFE"),
}
_BEIJING = re.compile(r"^(?:4|8|920)\d+$")
# Shanghai (1) and Shenzhen (0, with Beijing's codes) list indices, funds and bonds under
# the same market ids as stocks: the kind follows the exchanges' allocation of 6-digit
# codes (SSE and SZSE code ranges; BSE's 4xxxxx, 8xxxxx, 920xxx). The longest matching
# prefix wins; a 6-digit code that no range covers is ``other``.
_CODE_KINDS: dict[str, dict[str, str]] = {
    "1": {
        "60": "stock", "68": "stock", "900": "stock",  # A shares, STAR Market, B shares
        "000": "index", "5": "fund", "1": "bond",  # ETFs and LOFs; bonds, convertibles
    },
    "0": {
        "00": "stock", "30": "stock", "200": "stock",  # main board, ChiNext, B shares
        "399": "index", "15": "fund", "16": "fund", "12": "bond",
        "4": "stock", "8": "stock", "920": "stock",  # Beijing
    },
}  # fmt: skip
_SIX_DIGITS = re.compile(r"[0-9]{6}")


def stock_kind(market: str, code: str) -> str:
    """stock | fund | bond | board | index | future, by market id and, on the Shanghai
    and Shenzhen ids, by code range; ``other`` for an unknown id or uncovered code."""
    if code.upper().startswith("BK"):
        return "board"
    ranges = _CODE_KINDS.get(market)
    if ranges is None:
        return MARKETS.get(market, ("other", ""))[0]
    if _SIX_DIGITS.fullmatch(code):
        for length in (3, 2, 1):
            kind = ranges.get(code[:length])
            if kind:
                return kind
    return "other"


def stock_symbol(market: str, code: str) -> str:
    """A normalised symbol: 601818.SH, 300343.SZ, 430047.BJ, 03690.HK, NIO.N, BK0493.

    An unknown market id keeps Eastmoney's own form ``<market>.<code>``.
    """
    if market not in MARKETS:
        return f"{market}.{code}"
    kind, suffix = MARKETS[market]
    if kind == "board":
        return code
    if market == "0" and _BEIJING.match(code):
        suffix = ".BJ"
    return code + suffix


_QUOTE_HREF = re.compile(r"quote\.eastmoney\.com/unify/r/(\d+)\.([A-Za-z0-9_.\-]+?)(?:[/?#]|$)")


@lru_cache(maxsize=4096)
def parse_stock_markup(data_code: str | None, href: str | None) -> tuple[str, str] | None:
    """(market, code) of one piece of Eastmoney stock markup, or None if it is not one.

    ``data-code`` forms: ``CODE|MARKET|TYPE`` (K-line), ``MARKET,CODE`` (inline),
    bare ``CODE`` (market from the quote link). Without a data-code, the quote link
    ``…/unify/r/MARKET.CODE`` alone.
    """
    linked = _QUOTE_HREF.search(href) if href else None
    code = (data_code or "").strip()
    if code.startswith("K "):  # the K-line <img> repeats its anchor's data-code
        return None
    if "|" in code:
        parts = code.split("|")
        if len(parts) >= 2 and parts[0] and parts[1]:
            return parts[1], parts[0]
        return None
    if "," in code:
        market, _, value = code.partition(",")
        return (market.strip(), value.strip()) if market and value else None
    if code:
        if linked and linked[2] == code:
            return linked[1], code
        return None
    if linked:
        return linked[1], linked[2]
    return None
