"""Page parsers: one response or one post file in, one ``Article`` out.

Parsers are pure functions of bytes, a URL and headers. Every failure to read an
input raises ``ExtractionError`` with a human-readable reason.
"""


class ExtractionError(ValueError):
    """The input cannot be read as an article; ``reason`` says why in one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason
