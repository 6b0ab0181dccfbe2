"""Puts the rendered report into docs/benchmarks.md: the suite's block between
`<!-- suite:begin -->` and `<!-- suite:end -->`, and bench/drain.py's section in place of the old
one, keeping every other section and the chaos block exactly as they are. It renders nothing."""

from __future__ import annotations

from pathlib import Path

from .common import BEGIN, CHAOS_BEGIN, CHAOS_END, DRAIN_HEADING, END


def replace_drain_section(doc: Path, section: str) -> None:
    """Put bench/drain.py's fresh section in place of the old one, which ends at the next
    heading or marker, whichever comes first."""
    text = doc.read_text()
    section = section.rstrip("\n") + "\n\n"
    if DRAIN_HEADING not in text:
        at = text.index(BEGIN) if BEGIN in text else len(text)
        doc.write_text(text[:at] + section + text[at:])
        return
    start = text.index(DRAIN_HEADING)
    ends = [i for i in (text.find("\n## ", start + 1), text.find("\n<!--", start)) if i != -1]
    end = min(ends) + 1 if ends else len(text)
    doc.write_text(text[:start] + section + text[end:])


def write(doc: Path, section: str) -> None:
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{section.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        start, end = text.index(BEGIN), text.index(END) + len(END)
        text = text[:start] + block + text[end:]
    elif CHAOS_BEGIN in text:
        start = text.index(CHAOS_BEGIN)
        text = text[:start] + block + "\n\n" + text[start:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    if CHAOS_BEGIN not in text:
        text = text.rstrip("\n") + f"\n\n{CHAOS_BEGIN}\n{CHAOS_END}\n"
    doc.write_text(text)
