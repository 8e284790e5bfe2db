"""The ``%vram`` line magic: parse the line, call the action, hand back something to display."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class

from vram_magic.ipython.arguments import HelpShown, parse_vram_line
from vram_magic.readings.report import read_report
from vram_magic.render.view import ReportView


def _report_view(options: argparse.Namespace) -> ReportView:
    report = read_report()
    if options.device is not None:
        chosen = tuple(d for d in report.devices if d.cuda_index == options.device)
        if not chosen:
            visible = ", ".join(f"cuda:{d.cuda_index}" for d in report.devices) or "none"
            raise UsageError(f"%vram report: no device cuda:{options.device} (visible: {visible})")
        report = dataclasses.replace(report, devices=chosen)
    return ReportView(report, top=options.top)


@magics_class
class VramMagics(Magics):
    """``%vram [subcommand] [options]``; ``%vram report --help`` lists a subcommand's options."""

    @line_magic
    def vram(self, line: str) -> Any:
        try:
            name, options = parse_vram_line(line)
        except HelpShown:
            return None
        if name == "report":
            return _report_view(options)
        raise UsageError(f"%vram: {name} is not available")  # every parsed name is handled above
