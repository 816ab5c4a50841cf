"""Rendering the report templates (Jinja2, in mdgru_bids/data) into HTML files."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from mdgru_bids import __version__
from mdgru_bids.derivatives import write_atomic

_ENV = Environment(
    loader=PackageLoader("mdgru_bids", "data"),
    autoescape=True,
    undefined=StrictUndefined,  # a missing value is a bug, not an empty cell
    trim_blocks=True,
    lstrip_blocks=True,
)


def render(template_name: str, path: Path, **context: object) -> Path:
    """Render a template into ``path`` (atomically); every report shows version and date."""
    html = _ENV.get_template(template_name).render(
        version=__version__,
        generated=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        **context,
    )
    write_atomic(path, html)
    return path
