"""Charts as server-side SVG: no JavaScript library, nothing fetched, readable without scripts.

    line_chart(series, unit=…)     time series, several at once: lines, or stacked areas
    bar_chart(bars, unit=…)        top-N as horizontal bars, optionally stacked by part
    sparkline(values, unit=…)      a small trend line for a table cell or a stat tile

Every chart is an `<svg role="img">` with a `<title>` and an `aria-label` that says what it shows;
hovering a point (few points) or a time column (many) shows its values through SVG `<title>`
elements, which browsers show as tooltips — no inline script, so the dashboard's CSP holds.

Weight is bounded whatever the data: paths carry rounded coordinates, per-point circles are drawn
only while there are few points (MAX_POINTS), and past that the hover columns are merged into at
most MAX_COLUMNS bands (values summed or averaged, by unit). Colours are presentation attributes
from one palette legible on light and dark backgrounds; text and axes use `currentColor`.
Everything that comes from data (series names, labels) goes through `escape`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html import escape as _escape
from typing import Literal

from markupsafe import Markup

Unit = Literal["usd", "ms", "tokens", "pct", "count"]
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
           "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#8c8c8c")
MAX_POINTS = 120        # circles with their own <title> up to this many points in a chart
MAX_COLUMNS = 60        # hover bands past that
MAX_PATH = 240          # points per drawn line; more buckets are averaged in pairs, threes… (sub-pixel anyway)
ADDITIVE: frozenset[str] = frozenset({"usd", "tokens", "count"})   # merged bands sum these, average others


def escape(value: object) -> str:
    return _escape(str(value), quote=True)


# -- numbers for people ---------------------------------------------------------------------------

def _compact(value: float, digits: int = 1) -> str:
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            text = f"{value / limit:.{digits}f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.{digits}f}"


def fmt(value: float | None, unit: Unit) -> str:
    """$0.0042, $12.34, $1.2k · 850 ms, 1.2 s, 2.5 min · 12.3k · 2.5 % · 1,234."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if unit == "usd":
        if value == 0:
            return "$0"
        if abs(value) >= 1000:
            return "$" + _compact(value)
        if abs(value) >= 1:
            return f"${value:,.2f}"
        if abs(value) >= 0.01:
            return f"${value:.3f}".rstrip("0")
        return f"${value:.2g}" if abs(value) < 0.0001 else f"${value:.4f}".rstrip("0")
    if unit == "ms":
        if value == 0:
            return "0"
        if abs(value) >= 60_000:
            return f"{value / 60_000:.1f} min"
        if abs(value) >= 1000:
            return f"{value / 1000:.1f} s".replace(".0 s", " s")
        return f"{value:.0f} ms" if abs(value) >= 10 else f"{value:.1f} ms"
    if unit == "pct":
        pct = value * 100
        return f"{pct:.0f} %" if pct == 0 or abs(pct) >= 10 else f"{pct:.1f} %"
    return _compact(value)


def nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round tick values covering [low, high] (1, 2, 2.5 or 5 × a power of ten apart)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        high = low + 1
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = [round(first, 12)]
    while ticks[-1] < high - step * 1e-9 and len(ticks) < count + 4:
        ticks.append(round(first + len(ticks) * step, 12))
    return ticks


_TIME_STEPS = (60_000, 300_000, 900_000, 1_800_000, 3_600_000, 10_800_000, 21_600_000, 43_200_000,
               86_400_000, 172_800_000, 604_800_000, 1_209_600_000, 2_592_000_000)


def time_ticks(start: int, end: int, count: int = 6) -> list[int]:
    """Epoch-ms ticks at round UTC times (minutes, hours, days, weeks) within [start, end]."""
    span = max(end - start, 1)
    step = next((s for s in _TIME_STEPS if span / s <= count), _TIME_STEPS[-1])
    first = -(-start // step) * step
    return list(range(first, end + 1, step))


def time_label(ms: int, span_ms: int) -> str:
    """UTC, as short as the span allows: 14:05 · Dec 4 14:00 · Dec 4."""
    t = time.gmtime(ms / 1000)
    day = f"{time.strftime('%b', t)} {t.tm_mday}"
    if span_ms <= 86_400_000:
        return time.strftime("%H:%M", t)
    if span_ms <= 7 * 86_400_000 and (t.tm_hour or t.tm_min):
        return f"{day} {time.strftime('%H:%M', t)}"
    return day


def short_time(ms: int, bucket_ms: int) -> str:
    """Dec 4 14:05 (Dec 4 for whole days): hover text, where the page already says the zone."""
    t = time.gmtime(ms / 1000)
    day = f"{time.strftime('%b', t)} {t.tm_mday}"
    return day if bucket_ms >= 86_400_000 else f"{day} {time.strftime('%H:%M', t)}"


def _local(ms: int, bucket_ms: int, span_ms: int | None = None) -> str:
    """Attributes by which app.js shows a time of day in the browser's zone. Days stay UTC days:
    they are the rollups' buckets, and a local date could name the wrong one."""
    if bucket_ms >= 86_400_000:
        return ""
    shown = short_time(ms, bucket_ms) if span_ms is None else time_label(ms, span_ms)
    return f' data-t="{ms}" data-utc="{escape(shown)}"' + ("" if span_ms is None else f' data-span="{span_ms}"')


def time_title(ms: int, bucket_ms: int) -> str:
    t = time.gmtime(ms / 1000)
    return time.strftime("%Y-%m-%d" if bucket_ms >= 86_400_000 else "%Y-%m-%d %H:%M", t) + " UTC"


# -- charts ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float | None]     # one per bucket of the chart's time axis; None: no data


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    value: float
    href: str | None = None
    parts: Sequence[float] = field(default_factory=tuple)   # stacked segments (sum ≈ value), optional
    note: str = ""                                          # extra text after the value


def _n(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _short(value: float) -> str:
    text = _n(value)
    return text.replace("0.", ".", 1) if text.startswith(("0.", "-0.")) else text


def _polyline(xs: Sequence[float], ys: Sequence[float]) -> str:
    """M x y then relative steps (rounded on the absolute grid, so no drift): ~8 bytes a point."""
    ax = [round(v, 1) for v in xs]
    ay = [round(v, 1) for v in ys]
    steps = " ".join(f"{_short(ax[i] - ax[i - 1])} {_short(ay[i] - ay[i - 1])}" for i in range(1, len(ax)))
    return f"M{_n(ax[0])} {_n(ay[0])}" + (f"l{steps}" if steps else "")


def _svg_open(width: int, height: int, title: str, summary: str, kind: str, extra: str = "") -> list[str]:
    label = escape(f"{title}. {summary}" if summary else title)
    return [f'<svg class="chart chart-{kind}" viewBox="0 0 {width} {height}" width="100%" role="img" '
            f'aria-label="{label}" preserveAspectRatio="xMidYMid meet"{extra} '
            f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>']


def _legend(names: Sequence[str]) -> str:
    items = "".join(f'<li><svg class="swatch" width="10" height="10" aria-hidden="true"><rect width="10" height="10" rx="2" '
                    f'fill="{PALETTE[i % len(PALETTE)]}"/></svg> {escape(name)}</li>'
                    for i, name in enumerate(names))
    return f'<ul class="legend">{items}</ul>' if len(names) > 1 else ""


def line_chart(series: Sequence[Series], times: Sequence[int], *, unit: Unit, title: str, bucket_ms: int,
               stacked: bool = False, width: int = 720, height: int = 220) -> Markup:
    """Time series over `times` (bucket starts, epoch ms, ascending): lines, or stacked areas.
    Returns the SVG followed by its legend (an HTML list, so long names wrap)."""
    names = [s.name for s in series]
    if not times or not series:
        return Markup(f'<p class="chart-empty">{escape(title)}: no data in this range.</p>')
    left, right, top, bottom = 58, 8, 10, 24
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(times)
    base = [0.0] * n
    layers: list[list[tuple[float, float] | None]] = []     # (low, high) per bucket
    for s in series:
        layer: list[tuple[float, float] | None] = []
        for i in range(n):
            v = s.values[i] if i < len(s.values) else None
            if v is None:
                layer.append((base[i], base[i]) if stacked else None)
                continue
            low = base[i] if stacked else 0.0
            layer.append((low, low + v))
            if stacked:
                base[i] += v
        layers.append(layer)
    highs = [p[1] for layer in layers for p in layer if p is not None]
    lows = [p[1] for layer in layers for p in layer if p is not None] + [0.0]
    if not highs:
        return Markup(f'<p class="chart-empty">{escape(title)}: no data in this range.</p>')
    ticks = nice_ticks(min(lows), max(highs) or 1.0)
    y_low, y_high = ticks[0], ticks[-1]
    span_ms = times[-1] + bucket_ms - times[0]

    def x(i: int) -> float:
        return left + (plot_w * (i + 0.5) / n)

    def y(v: float) -> float:
        return top + plot_h - (v - y_low) / (y_high - y_low) * plot_h

    total = sum(1 for layer in layers for p in layer if p is not None)
    summary = (f"{len(series)} series ({', '.join(names[:10])}) over {n} buckets from "
               f"{time_title(times[0], bucket_ms)} to {time_title(times[-1], bucket_ms)}; "
               f"highest {fmt(max(highs), unit)}")
    out = _svg_open(width, height, title, summary, "line", f' data-points="{total}" data-series="{len(series)}"')
    out.append('<g class="axis" fill="currentColor" font-size="11">')
    for tick in ticks:
        ty = _n(y(tick))
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{ty}" y2="{ty}" stroke="currentColor" '
                   f'stroke-opacity=".12"/><text x="{left - 6}" y="{ty}" dy="4" text-anchor="end">{escape(fmt(tick, unit))}</text>')
    for t in time_ticks(times[0], times[-1] + bucket_ms):
        tx = left + plot_w * (t - times[0]) / (n * bucket_ms)
        if left <= tx <= width - right:
            anchor = "start" if tx < left + 30 else "end" if tx > width - right - 30 else "middle"
            out.append(f'<text x="{_n(tx)}" y="{height - 6}" text-anchor="{anchor}"{_local(t, bucket_ms, span_ms)}>'
                       f'{escape(time_label(t, span_ms))}</text>')
    out.append("</g>")
    base_y = _n(y(max(y_low, 0.0)))
    # Stacked: painter's order, each layer's top filled down to the axis, the highest drawn first.
    order = range(len(layers) - 1, -1, -1) if stacked else range(len(layers))
    for index in order:
        layer = layers[index]
        colour = PALETTE[index % len(PALETTE)]
        drawn = _downsampled([x(i) for i in range(n)], [None if p is None else p[1] for p in layer])
        runs: list[list[tuple[float, float]]] = [[]]
        for px, value in drawn:
            if value is None:
                runs.append([])
            else:
                runs[-1].append((px, value))
        for run in (r for r in runs if r):
            line = _polyline([px for px, _ in run], [y(v) for _, v in run])
            if stacked:
                out.append(f'<path d="{line}V{base_y}H{_n(run[0][0])}Z" fill="{colour}" stroke="{colour}" stroke-width="1"/>')
            elif len(run) == 1:
                out.append(f'<circle cx="{_n(run[0][0])}" cy="{_n(y(run[0][1]))}" r="2.5" fill="{colour}"/>')
            else:
                out.append(f'<path d="{line}" fill="none" stroke="{colour}" stroke-width="1.8" stroke-linejoin="round"/>')
    if total <= MAX_POINTS:
        for index, (s, layer) in enumerate(zip(series, layers)):
            out.append(f'<g class="pts" fill="{PALETTE[index % len(PALETTE)]}">')
            for i, p in enumerate(layer):
                v = s.values[i] if i < len(s.values) else None
                if p is None or v is None:
                    continue
                out.append(f'<circle cx="{_n(x(i))}" cy="{_n(y(p[1]))}" r="3"><title{_local(times[i], bucket_ms)}>'
                           f'{escape(s.name)} · {short_time(times[i], bucket_ms)}: {escape(fmt(v, unit))}</title></circle>')
            out.append("</g>")
    else:
        out.extend(_hover_bands(series, times, bucket_ms, unit, left, top, plot_w, plot_h))
    out.append("</svg>")
    return Markup("".join(out) + _legend(names))


def _downsampled(xs: Sequence[float], tops: Sequence[float | None]) -> list[tuple[float, float | None]]:
    """At most MAX_PATH points per line: neighbouring buckets averaged (more would be under a pixel)."""
    per = max(1, math.ceil(len(xs) / MAX_PATH))
    if per == 1:
        return list(zip(xs, tops))
    out: list[tuple[float, float | None]] = []
    for first in range(0, len(xs), per):
        known = [v for v in tops[first:first + per] if v is not None]
        out.append((sum(xs[first:first + per]) / len(xs[first:first + per]), sum(known) / len(known) if known else None))
    return out


def _hover_bands(series: Sequence[Series], times: Sequence[int], bucket_ms: int, unit: Unit,
                 left: int, top: int, plot_w: int, plot_h: int) -> list[str]:
    """Transparent columns whose <title> lists every series' value there (buckets merged when many)."""
    n = len(times)
    per = max(1, math.ceil(n / MAX_COLUMNS))
    out = ['<g class="hover" fill="transparent">']
    for first in range(0, n, per):
        last = min(first + per, n)
        head = short_time(times[first], bucket_ms)
        if per > 1:
            head += f"–{short_time(times[last - 1] + bucket_ms, bucket_ms)}" + (" (sum)" if unit in ADDITIVE else " (mean)")
        lines = [head]
        for s in series:
            values = [v for v in s.values[first:last] if v is not None]
            if values:
                value = sum(values) if unit in ADDITIVE else sum(values) / len(values)
                lines.append(f"{s.name}: {fmt(value, unit)}")
        x0 = left + plot_w * first / n
        local = _local(times[first], bucket_ms) if per == 1 else ""
        out.append(f'<rect x="{_n(x0)}" y="{top}" width="{_n(plot_w * (last - first) / n)}" height="{plot_h}">'
                   f'<title{local}>{escape(chr(10).join(lines))}</title></rect>')
    out.append("</g>")
    return out


def bar_chart(bars: Sequence[Bar], *, unit: Unit, title: str, part_names: Sequence[str] = (),
              width: int = 480, row: int = 22) -> Markup:
    """Horizontal bars, largest first as given; each bar links to `href` when set."""
    if not bars:
        return Markup(f'<p class="chart-empty">{escape(title)}: no data in this range.</p>')
    label_w, value_w = 170, 90
    plot_w = width - label_w - value_w
    height = row * len(bars) + 4
    top_value = max((b.value for b in bars), default=0) or 1
    summary = "; ".join(f"{b.label}: {fmt(b.value, unit)}" for b in bars[:10])
    out = _svg_open(width, height, title, summary, "bar", f' data-bars="{len(bars)}"')
    out.append('<g font-size="12" fill="currentColor">')
    for i, b in enumerate(bars):
        y0 = 2 + i * row
        label = b.label if len(b.label) <= 26 else b.label[:25] + "…"
        tip = f"{b.label}: {fmt(b.value, unit)}" + (f" · {b.note}" if b.note else "")
        item = [f'<title>{escape(tip)}</title>',
                f'<text x="{label_w - 6}" y="{y0 + row / 2 + 4:.0f}" text-anchor="end">{escape(label)}</text>']
        segments = list(b.parts) if b.parts else [b.value]
        offset = 0.0
        for k, part in enumerate(segments):
            w = max(0.0, part) / top_value * plot_w
            colour = PALETTE[(k if b.parts else 0) % len(PALETTE)]
            item.append(f'<rect x="{_n(label_w + offset)}" y="{y0 + 3}" width="{_n(max(w, 1 if part > 0 else 0))}" '
                        f'height="{row - 6}" fill="{colour}" rx="2"/>')
            offset += w
        item.append(f'<text x="{_n(label_w + offset + 6)}" y="{y0 + row / 2 + 4:.0f}">{escape(fmt(b.value, unit))}</text>')
        body = "".join(item)
        if b.href:
            out.append(f'<a href="{escape(b.href)}"><g class="bar">{body}</g></a>')
        else:
            out.append(f'<g class="bar">{body}</g>')
    out.append("</g></svg>")
    return Markup("".join(out) + (_legend(part_names) if part_names else ""))


def sparkline(values: Iterable[float | None], *, unit: Unit, title: str, width: int = 120, height: int = 28) -> Markup:
    """A trend line without axes; its <title> gives the range and the last value."""
    data = list(values)
    known = [v for v in data if v is not None]
    if len(known) < 2:
        return Markup("")
    low, high = min(known), max(known)
    spread = (high - low) or 1.0
    step = (width - 4) / (len(data) - 1)
    points, pen = [], "M"
    for i, v in enumerate(data):
        if v is None:
            pen = "M"
            continue
        points.append(f"{pen}{_n(2 + i * step)} {_n(height - 3 - (v - low) / spread * (height - 6))}")
        pen = "L"
    text = f"{title}: {fmt(low, unit)} to {fmt(high, unit)}, last {fmt(known[-1], unit)}"
    return Markup(f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
                  f'preserveAspectRatio="none" role="img" '
                  f'aria-label="{escape(text)}" xmlns="http://www.w3.org/2000/svg"><title>{escape(text)}</title>'
                  f'<path d="{"".join(points)}" fill="none" stroke="{PALETTE[0]}" stroke-width="1.5" '
                  f'vector-effect="non-scaling-stroke"/></svg>')
