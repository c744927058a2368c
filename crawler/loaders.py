"""The item loader: input processors that turn raw extracted values into item fields.

Both page parsers fill an ``ArticleLoader``; output processors sit on the item fields
(``crawler.items``), so the two parsers cannot drift apart in how they clean a field.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from itemloaders import ItemLoader
from itemloaders.processors import Identity, MapCompose
from itemloaders.utils import arg_to_iter

from crawler.items import Article
from crawler.pages.body import Body
from crawler.processors import (
    clean_text,
    clean_title,
    info_code_from_article_link,
    info_code_from_name,
    info_code_from_share_link,
    outlet_from_tag,
    parse_site_time,
)

_FIELD_META = {f.name: f.metadata for f in fields(Article)}


class ArticleLoader(ItemLoader):
    default_item_class = Article
    default_input_processor = Identity()

    title_in = MapCompose(clean_title)
    published_at_in = MapCompose(parse_site_time)
    category_in = MapCompose(clean_text)
    outlet_in = MapCompose(outlet_from_tag)

    # The item class is fixed, so each field's processors are looked up once per class
    # instead of through a new ItemAdapter on every add_value (a third of parse time).
    _processors: dict[tuple[str, str], Any] = {}

    def _processor(self, field_name: str, suffix: str, default: Any) -> Any:
        cache = type(self)._processors
        key = (field_name, suffix)
        if key not in cache:
            own = getattr(self, f"{field_name}_{suffix}", None)
            if own is None:
                meta = _FIELD_META.get(field_name, {})
                own = meta.get("input_processor" if suffix == "in" else "output_processor", default)
            cache[key] = own
        return cache[key]

    def get_input_processor(self, field_name: str) -> Any:
        return self._processor(field_name, "in", self.default_input_processor)

    def get_output_processor(self, field_name: str) -> Any:
        return self._processor(field_name, "out", self.default_output_processor)

    def add_value(self, field_name: str | None, value: Any, *processors: Any, **kw: Any) -> Any:
        """ItemLoader.add_value, minus its generic machinery for the plain call.

        The parsers call ``add_value(name, value)`` about twenty times an item; the
        generic path (extra processors, regexes, loader contexts) costs ~0.1 ms an item
        that none of our processors needs. Anything else takes the generic path.
        """
        if processors or kw or field_name is None:
            return super().add_value(field_name, value, *processors, **kw)
        if value is None:
            return self
        processed = self.get_input_processor(field_name)(arg_to_iter(value))
        if processed:
            self._values.setdefault(field_name, []).extend(arg_to_iter(processed))
        return self

    def add_fallback(self, field_name: str, value: Any) -> None:
        """Add ``value`` only while the field has no value yet: later sources in a
        documented fallback order are not even processed once an earlier one gave one."""
        if not self.get_collected_values(field_name):
            self.add_value(field_name, value)

    def add_body(self, body: Body) -> None:
        """The fields the shared body extractor found."""
        for name in ("digest", "source", "source_url", "body_html"):
            self.add_value(name, getattr(body, name))
        self.add_value("paragraphs", body.paragraphs)
        self.add_value("images", body.images)
        self.add_value("stocks", body.stocks)
        # Fallbacks, used only when the wrapper did not name them.
        self.add_fallback("outlet", body.backlink_outlet)
        self.add_fallback("category", body.backlink_category)

    def add_info_code(self, source_url: str | None, name: str | None) -> None:
        """The infoCode, in order of trust: NewsShare link, post name, eastmoney.com link."""
        self.add_value("info_code", info_code_from_share_link(source_url))
        self.add_fallback("info_code", info_code_from_name(name))
        self.add_fallback("info_code", info_code_from_article_link(source_url))
