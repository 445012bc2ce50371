"""charts.py: SVG that is escaped, accessible, bounded in size, with values people can read."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from heliograph.dashboard.charts import (
    MAX_COLUMNS,
    Bar,
    Series,
    bar_chart,
    fmt,
    line_chart,
    nice_ticks,
    sparkline,
    time_label,
    time_ticks,
)

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_764_806_400_000      # 2025-12-04 00:00 UTC
SVG = "{http://www.w3.org/2000/svg}"


def _svg(markup: str) -> ET.Element:
    return ET.fromstring(markup[:markup.index("</svg>") + 6])


def test_human_units() -> None:
    assert fmt(0.0042, "usd") == "$0.0042"
    assert fmt(12.345, "usd") == "$12.35"
    assert fmt(1234.5, "usd") == "$1.2k"
    assert fmt(0, "usd") == "$0"
    assert fmt(850, "ms") == "850 ms"
    assert fmt(1234, "ms") == "1.2 s"
    assert fmt(150_000, "ms") == "2.5 min"
    assert fmt(12_345, "tokens") == "12.3k"
    assert fmt(2_500_000, "tokens") == "2.5M"
    assert fmt(0.025, "pct") == "2.5 %"
    assert fmt(0.5, "pct") == "50 %"
    assert fmt(1234, "count") == "1.2k"
    assert fmt(None, "ms") == "–"


def test_ticks_are_round_and_cover_the_range() -> None:
    assert nice_ticks(0, 9.3) == [0, 2.5, 5, 7.5, 10]
    ticks = nice_ticks(0, 0.0042)
    assert ticks[0] == 0 and ticks[-1] >= 0.0042 and len(ticks) <= 7
    assert nice_ticks(5, 5)      # a flat series still gets an axis
    assert all(t % HOUR == 0 for t in time_ticks(T0 + 1, T0 + DAY))
    assert all(t % DAY == 0 for t in time_ticks(T0, T0 + 30 * DAY))
    assert time_label(T0 + 14 * HOUR, DAY) == "14:00"
    assert time_label(T0, 30 * DAY) == "Dec 4"


def test_line_chart_points_carry_titles_and_names_are_escaped() -> None:
    times = [T0 + i * HOUR for i in range(24)]
    evil = '"><script>alert(1)</script>'
    chart = line_chart([Series(evil, [i * 0.01 for i in range(24)]), Series("gpt-4o", [None] * 12 + [1.0] * 12)],
                       times, unit="usd", title="Cost by model", bucket_ms=HOUR)
    assert "<script>" not in chart and "&lt;script&gt;" in chart
    root = _svg(chart)
    assert root.get("role") == "img" and "Cost by model" in (root.get("aria-label") or "")
    assert root.find(f"{SVG}title") is not None
    points = root.findall(f"{SVG}g[@class='pts']/{SVG}circle")
    assert len(points) == 24 + 12
    assert all(p.find(f"{SVG}title") is not None for p in points)
    assert any("$0.23" in (p.find(f"{SVG}title").text or "") for p in points)   # type: ignore[union-attr]
    assert root.get("data-points") == "36"
    assert 'class="legend"' in chart and chart.count("<li>") == 2
    assert "$" in "".join(t.text or "" for t in root.iter(f"{SVG}text"))         # the y axis has units


def test_stacked_areas_and_gaps() -> None:
    times = [T0 + i * DAY for i in range(5)]
    chart = line_chart([Series("a", [1, 2, None, 4, 5]), Series("b", [1, 1, 1, 1, 1])], times,
                       unit="count", title="Requests", bucket_ms=DAY, stacked=True)
    root = _svg(chart)
    areas = [p for p in root.iter(f"{SVG}path") if p.get("d", "").endswith("Z")]
    assert len(areas) == 2
    # gaps (and a series ending in one) split lines instead of breaking the chart
    lines = _svg(line_chart([Series("p50", [1, 2, None, 4, None]), Series("p99", [None, 3, 5, None, None])], times,
                            unit="ms", title="Latency", bucket_ms=DAY))
    assert len(lines.findall(f"{SVG}path")) == 2 and len(lines.findall(f"{SVG}circle")) == 1   # a lone point


def test_empty_inputs_say_so() -> None:
    assert "no data" in line_chart([], [], unit="usd", title="Cost", bucket_ms=HOUR)
    assert "no data" in line_chart([Series("a", [None, None])], [T0, T0 + HOUR], unit="usd", title="Cost",
                                   bucket_ms=HOUR)
    assert "no data" in bar_chart([], unit="usd", title="Top models")
    assert sparkline([1], unit="ms", title="Latency") == ""


def test_page_weight_is_bounded_at_30_days_hourly_10_series() -> None:
    times = [T0 + i * HOUR for i in range(30 * 24)]
    series = [Series(f"model-{k}", [((i * 7919 + k * 104729) % 1000) / 997 for i in range(len(times))])
              for k in range(10)]
    chart = line_chart(series, times, unit="usd", title="Cost", bucket_ms=HOUR, stacked=True)
    root = _svg(chart)
    assert root.get("data-points") == str(7200)
    bands = root.findall(f"{SVG}g/{SVG}rect")
    assert 0 < len(bands) <= MAX_COLUMNS
    assert "model-9" in (bands[0].find(f"{SVG}title").text or "")   # type: ignore[union-attr]
    assert len(chart.encode()) < 120_000, len(chart.encode())
    lines = line_chart(series, times, unit="ms", title="Latency", bucket_ms=HOUR)
    assert len(lines.encode()) < 120_000


def test_bars_link_escape_and_stack() -> None:
    chart = bar_chart([Bar("gpt-4o", 12.5, href="/analytics?model=gpt-4o&x=1"), Bar("<b>x</b>", 2.0, parts=(1.5, 0.5))],
                      unit="usd", title="Top models by cost", part_names=("ok", "errors"))
    assert "<b>x</b>" not in chart and "&lt;b&gt;" in chart
    assert 'href="/analytics?model=gpt-4o&amp;x=1"' in chart
    root = _svg(chart)
    assert root.get("data-bars") == "2" and len(root.findall(f".//{SVG}rect")) == 3
    assert "$12.50" in chart


def test_sparkline() -> None:
    spark = sparkline([1, 3, None, 2, 5], unit="ms", title="p95")
    root = _svg(spark)
    assert root.get("role") == "img" and "5.0 ms" in (root.get("aria-label") or "")
    assert re.fullmatch(r"M[\d. ]+L[\d. ]+M[\d. ]+L[\d. ]+", root.find(f"{SVG}path").get("d", ""))  # type: ignore[union-attr]
