"""``scrapy extract``: the acceptance examples, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.golden import CORPUS

ROOT = Path(__file__).resolve().parent.parent
SCRAPY = [sys.executable, "-m", "scrapy.cmdline"]


def extract(*paths: Path | str) -> tuple[list[dict], subprocess.CompletedProcess]:
    proc = subprocess.run(
        [*SCRAPY, "extract", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return lines, proc


@pytest.fixture(scope="module")
def corpus_lines() -> dict[str, dict]:
    names = [
        "2022-04-27-NW202204272361734680.md",
        "2022-05-26-202205262391921712.md",
        "2022-05-26-NW202205262391921712.md",
        "-202205262391921712.md",
    ]
    lines, proc = extract(*(CORPUS / n for n in names))
    assert proc.returncode == 0, proc.stderr
    return dict(zip(names, lines, strict=True))


def test_outlet_article(corpus_lines):
    item = corpus_lines["2022-04-27-NW202204272361734680.md"]
    assert item["info_code"] == "NW202204272361734680"
    assert item["title"] == "光大银行联合美团发力“新市民” 数字化平台正“链接”机构共建金融服务生态圈"
    assert item["published_at"] == "2022-04-27T15:22:47+08:00"
    assert item["category"] == "zhengquanribaowang"
    assert item["outlet"] == item["source"] == "证券日报网"
    assert [(s["market"], s["code"], s["primary"]) for s in item["stocks"]] == [
        ("116", "03690", True),
        ("1", "601818", True),
    ]
    assert len(item["paragraphs"]) == 21
    assert item["paragraphs"][0] == "4月27日，光大银行、美团宣布联合发起新市民小微生意支持计划。"
    assert item["paragraphs"][-1].startswith("西南财经大学数字经济研究中心主任陈文")
    assert item["source_url"] == (
        "http://finews.zning.xyz/html_News/NewsShare.html?infoCode=NW202204272361734680"
    )
    assert "missing" not in item


def test_one_article_under_two_categories(corpus_lines):
    emnews = corpus_lines["2022-05-26-202205262391921712.md"]
    outlet = corpus_lines["2022-05-26-NW202205262391921712.md"]
    assert emnews["info_code"] == outlet["info_code"] == "NW202205262391921712"
    stocks = {(s["market"], s["code"]): s for s in emnews["stocks"]}
    assert stocks["1", "600160"]["name"] == "巨化股份"
    assert stocks["0", "300343"]["name"] == "联创股份"
    assert stocks["1", "600636"]["name"] == "国新文化"
    assert stocks["106", "NIO"]["primary"] is True
    assert stocks["90", "BK0493"]["kind"] == stocks["90", "BK0839"]["kind"] == "board"
    # BK0473 is marked up only inside the source line 上海<span>证券</span>报
    assert ("90", "BK0473") not in stocks
    assert emnews["source"] == "上海证券报"


def test_empty_title_and_date_say_what_is_missing(corpus_lines):
    item = corpus_lines["-202205262391921712.md"]
    assert item["info_code"] == "NW202205262391921712"
    assert item["missing"] == ["title", "published_at"]


def test_unreadable_inputs_print_an_error_line_and_fail_at_the_end(tmp_path):
    gbk = tmp_path / "2022-05-26-NW202205269999999999.md"
    gbk.write_bytes('---\ntitle: "标题"\n---\n正文'.encode("gbk"))
    lines, proc = extract(CORPUS / "2022-04-27-NW202204272361734680.md", gbk, tmp_path / "nope.md")
    assert proc.returncode == 1
    assert lines[0]["info_code"] == "NW202204272361734680"
    assert lines[1] == {"path": str(gbk), "error": lines[1]["error"]}
    assert lines[1]["error"].startswith("not UTF-8")
    assert lines[2]["error"].startswith("cannot read")
    assert "Traceback" not in proc.stderr
    assert "2 of 3 inputs failed" in proc.stderr
