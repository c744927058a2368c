"""The fast block renderer must give exactly what full CommonMark rendering gives."""

from __future__ import annotations

import pytest

from crawler.pages.kramdown import render_body, render_markdown
from crawler.pages.post import split_front_matter
from tests.golden import CORPUS

BLOCKS = [
    "> 一段摘要（上海证券报）",
    "> 摘要含 *强调* 与 [链接](http://a.b/)",
    "纯文本段落，含“引号”和 'single' \"double\"",
    "第一行\n第二行",
    "含 & 和 <b>内联</b> 的段落",
    "<http://finance.eastmoney.com/a/202112082206672930.html>",
    "<>",
    "[返回东财滚动新闻](../emnews/)\n[返回首页](../)",
    "[返回证券日报网新闻](//finews.withounder.com/category/zhengquanribaowang.html)｜[返回首页](//finews.withounder.com/)",
    '<p style="display:none;"><br /></p><!-- EM_StockImg_Start --><p>x</p><!-- EM_StockImg_End -->',
    "# 不是标题吗",
    "1. 列表",
    "    缩进代码",
]


@pytest.mark.parametrize("block", BLOCKS)
def test_block_shapes_render_like_commonmark(block):
    assert render_body(block) == render_markdown(block + "\n")


@pytest.mark.parametrize("post", sorted(CORPUS.glob("*.md")), ids=lambda p: p.name)
def test_corpus_bodies_render_like_commonmark(post):
    text = post.read_text(encoding="utf-8-sig").replace("\r\n", "\n")
    _, body = split_front_matter(text)
    assert render_body(body) == render_markdown(body)
