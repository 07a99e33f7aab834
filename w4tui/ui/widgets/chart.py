"""A braille line chart (2x4 dots per cell) for the loss curve: no plotting dependency, and cheap
enough to redraw once a second while a run is followed (points are bucketed per dot column first)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widget import Widget

from w4tui.ui.sources.fmt import number

# Braille bit for the dot at (column 0-1, row 0-3) of a cell.
_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
Series = Sequence[tuple[float, float]]


def plot(
    series: Sequence[Series], width: int, height: int, y_range: tuple[float, float] | None = None
) -> tuple[list[list[int]], list[list[int]], tuple]:
    """Dot bits and the series index per cell for ``series`` drawn in a ``width`` x ``height`` cell box,
    plus the (x0, x1, y0, y1) ranges used. Later series draw over earlier ones."""
    points = [p for s in series for p in s]
    bits = [[0] * width for _ in range(height)]
    owner = [[-1] * width for _ in range(height)]
    if not points or width < 1 or height < 1:
        return bits, owner, (0, 0, 0, 0)
    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    y0, y1 = y_range or (min(p[1] for p in points), max(p[1] for p in points))
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    cols, rows = width * 2, height * 4
    xspan = (x1 - x0) or 1.0

    def dot(cx: int, cy: int, index: int) -> None:
        row, col = (rows - 1 - cy), cx
        bits[row // 4][col // 2] |= _BITS[row % 4][col % 2]
        owner[row // 4][col // 2] = index

    for index, s in enumerate(series):
        low: dict[int, int] = {}
        high: dict[int, int] = {}
        for x, y in s:  # bucket per dot column: the min and max dot row that column must cover
            cx = min(cols - 1, int((x - x0) / xspan * (cols - 1) + 0.5))
            cy = min(rows - 1, max(0, int((y - y0) / (y1 - y0) * (rows - 1) + 0.5)))
            if cx not in low:
                low[cx], high[cx] = cy, cy
            else:
                low[cx], high[cx] = min(low[cx], cy), max(high[cx], cy)
        previous: int | None = None
        last_y = 0  # the row the line left the previous column at (set with previous)
        for cx in sorted(low):
            lo, hi = low[cx], high[cx]
            if previous is not None and cx - previous > 1:  # join the gap to the last column
                _line(previous, last_y, cx, (lo + hi) // 2, dot, index)
            elif previous is not None:  # touching columns: extend the span so the line stays connected
                lo, hi = min(lo, last_y), max(hi, last_y)
            for cy in range(lo, hi + 1):
                dot(cx, cy, index)
            previous, last_y = cx, (low[cx] + high[cx]) // 2
    return bits, owner, (x0, x1, y0, y1)


def _line(xa: int, ya: int, xb: int, yb: int, dot, index: int) -> None:
    steps = max(abs(xb - xa), abs(yb - ya))
    for i in range(1, steps):
        dot(xa + round((xb - xa) * i / steps), ya + round((yb - ya) * i / steps), index)


class LineChart(Widget):
    """Shows series of (x, y) points; set ``series`` via ``update()`` with a version number so the
    (cached) picture is redrawn only when the data or the size changed."""

    COMPONENT_CLASSES = {"chart--axis", "chart--series-0", "chart--series-1", "chart--empty"}
    DEFAULT_CSS = """
    LineChart { height: 1fr; min-height: 4; }
    LineChart > .chart--axis { color: $text-muted; }
    LineChart > .chart--series-0 { color: $primary; }
    LineChart > .chart--series-1 { color: $warning; }
    LineChart > .chart--empty { color: $text-muted; }
    """

    def __init__(
        self,
        empty: str = "no data yet",
        y_range: tuple[float, float] | None = None,
        x_format=lambda x: f"{x:g}",
        y_format=lambda y: number(y, 4),
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.empty, self.y_range, self.x_format, self.y_format = empty, y_range, x_format, y_format
        self._series: list[Series] = []
        self._version = -1
        self._cache: tuple[tuple, Text] | None = None

    def update(self, series: list[Series], version: int) -> None:
        if version != self._version:
            self._series, self._version = series, version
            self.refresh()

    def render(self) -> Text:
        key = (self._version, self.size.width, self.size.height, self.app.theme)
        if self._cache is None or self._cache[0] != key:
            self._cache = (key, self._draw(self.size.width, self.size.height))
        return self._cache[1]

    def _draw(self, width: int, height: int) -> Text:
        if not any(self._series):
            return Text(self.empty, style=self.get_component_rich_style("chart--empty"))
        label_w = 8
        plot_w, plot_h = max(1, width - label_w - 1), max(1, height - 1)
        bits, owner, (x0, x1, y0, y1) = plot(self._series, plot_w, plot_h, self.y_range)
        axis = self.get_component_rich_style("chart--axis")
        styles = [self.get_component_rich_style(f"chart--series-{i}") for i in range(2)]
        text = Text(no_wrap=True, overflow="crop")
        for row in range(plot_h):
            if row == 0:
                label = self.y_format(y1)
            elif row == plot_h - 1:
                label = self.y_format(y0)
            elif row == plot_h // 2 and plot_h >= 5:
                label = self.y_format((y0 + y1) / 2)
            else:
                label = ""
            text.append(f"{label[:label_w]:>{label_w}}┤" if label else " " * label_w + "│", axis)
            run_style, run = None, []
            for col in range(plot_w):
                cell = chr(0x2800 + bits[row][col]) if bits[row][col] else " "
                style = styles[owner[row][col] % 2] if owner[row][col] >= 0 else None
                if style != run_style and run:
                    text.append("".join(run), run_style)
                    run = []
                run_style = style
                run.append(cell)
            text.append("".join(run), run_style)
            text.append("\n")
        left, right = self.x_format(x0), self.x_format(x1)
        text.append(" " * label_w + "└" + left + right.rjust(max(1, plot_w - len(left))), axis)
        return text
