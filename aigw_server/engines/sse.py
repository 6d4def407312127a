"""Server-sent events: turns the lines of a `text/event-stream` body into the data of each event."""

from __future__ import annotations


class SseDecoder:
    """Feeds on lines (without their line ends); returns an event's data when a blank line ends it.

    Follows the WHATWG rules that matter for OpenAI-style streams: `data:` fields of one event are
    joined with newlines, one leading space after the colon is dropped, comments (`:`) and other
    fields (`event:`, `id:`, `retry:`) are ignored.
    """

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> str | None:
        if not line:
            if not self._data:
                return None
            data = "\n".join(self._data)
            self._data = []
            return data
        if line.startswith("data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None

    def flush(self) -> str | None:
        """The data of an event the stream ended without a blank line after, if any."""
        return self.feed("")


class LineSplitter:
    """Cuts a body arriving in parts into its lines (LF, CRLF or CR ends them; returned without them)."""

    __slots__ = ("_rest",)

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, part: bytes) -> list[str]:
        data = self._rest + part if self._rest else part
        lines = data.splitlines(keepends=True)
        # A last line without its end, or ending in CR (its LF may be in the next part), waits for more.
        self._rest = lines.pop() if lines and not lines[-1].endswith(b"\n") else b""
        return [line.rstrip(b"\r\n").decode("utf-8", "replace") for line in lines]
