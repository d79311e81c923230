"""The cluster tier prints what it measured (start-up, the lost node, the server outage) after the test summary."""

from __future__ import annotations

from tests.cluster.parts import MEASURED


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("cluster tier: measured on this machine")
        for what, value in MEASURED.items():
            terminalreporter.write_line(f"{what}: {value:.1f} s" if isinstance(value, float) else f"{what}: {value}")
