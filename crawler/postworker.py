"""A parser worker of ``crawler.postpool``: ``python -m crawler.postworker``.

Started by the pool, never by hand: it reads pickled chunks of files to read on stdin and
writes pickled results on stdout until stdin ends.
"""

import sys

if __name__ == "__main__":
    # itemadapter imports Scrapy when it can (for scrapy.Item). A worker handles dataclasses
    # only, and without Scrapy and Twisted loaded it needs ~35 MB instead of ~65 MB.
    sys.modules.setdefault("scrapy", None)  # type: ignore[arg-type]
    from crawler.postpool import main

    main()
