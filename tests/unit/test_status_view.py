"""`bmc status`'s rendering, from figures as Prometheus returns them."""

from __future__ import annotations

import math

from rich.console import Console

from services.cli.status import Consumer, Process, Snapshot, render, sparkline


def test_a_sparkline_scales_to_its_highest_value_and_shows_gaps() -> None:
    assert sparkline((0.0, 1.0, 2.0, 4.0)) == "▁▂▄█"
    assert sparkline((3.0, math.nan, 3.0)) == "█ █"
    assert sparkline(()) == ""
    assert sparkline((0.0, 0.0)) == "▁▁", "an idle process is a flat line, not an error"


def test_the_view_shows_what_is_down_lagging_and_firing() -> None:
    snapshot = Snapshot(
        processes=[
            Process("invoice-0", "services", True, 12.5, 0.004, 0.0123, (1.0, 2.0)),
            Process("commission-0", "services", False),
            Process("invoice-0", "envoy", True),
        ],
        consumers=[Consumer("invoice.events", "commission", 42, 310.0, (0.0, 42.0))],
        outboxes={"invoice.events": 0.0},
        dead_letters={"certificate": 2},
        firing=["ConsumerStalled"],
    )
    console = Console(record=True, width=140)
    console.print(render(snapshot))
    text = console.export_text()
    assert "invoice-0" in text
    assert "envoy invoice-0" in text
    assert "12.5" in text
    assert "0.4%" in text
    assert "12 ms" in text
    assert "DOWN" in text
    assert "42" in text
    assert "310 s" in text
    assert "certificate 2" in text
    assert "ConsumerStalled" in text
