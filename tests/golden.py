"""Golden pairs: ``fixtures/corpus/posts/<name>.md`` and the expected ``<name>.json``.

``python -m tests.golden draft [--force]`` drafts missing JSON files from the current
extractor. A draft is not a golden file until a person has checked every field against
the post (title, instant and offset, every stock code, the paragraph count).
``tests/test_golden.py`` compares every field of every file, as a post file and as the
page the mirror renders from it, with its golden file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from crawler.items import Article

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "corpus" / "posts"
# Fields that depend on where the file lies, not on what it says.
UNCHECKED = ("url",)


def golden_fields(article: Article) -> dict:
    data = article.to_json_dict()
    for name in UNCHECKED:
        data.pop(name)
    return data


def expected_path(post: Path) -> Path:
    return post.with_suffix(".json")


def load_expected(post: Path) -> dict:
    return json.loads(expected_path(post).read_text(encoding="utf-8"))


def dump(data: dict) -> str:
    return json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def draft(force: bool = False) -> int:
    from crawler.pages.post import parse_post

    written = 0
    for post in sorted(CORPUS.glob("*.md")):
        target = expected_path(post)
        if target.exists() and not force:
            continue
        article = parse_post(post.read_bytes(), post.as_uri())
        target.write_text(dump(golden_fields(article)), encoding="utf-8")
        written += 1
    print(f"drafted {written} expected files in {CORPUS}: check each against its post")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] != ["draft"]:
        sys.exit("usage: python -m tests.golden draft [--force]")
    sys.exit(draft(force="--force" in sys.argv))
