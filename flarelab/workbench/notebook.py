"""One call at the top of a notebook: BokehJS loaded inline, and a trio runner."""

from __future__ import annotations

import logging

from .runner import TrioRunner

__all__ = ["setup_notebook"]


def setup_notebook(*, inline: bool = True) -> TrioRunner:
    """Load BokehJS into the page (inline: no CDN is needed) and return a :class:`TrioRunner`.

    Call it in a notebook cell (ipykernel's asyncio loop must be running). BokehJS must be
    loaded before any widget shows, or the page says "Could not create a view for model id".
    """
    from bokeh.io import output_notebook
    from bokeh.resources import INLINE

    # long error texts are cut to the span limit; the notice would clutter cell outputs
    logging.getLogger("opentelemetry.attributes").setLevel(logging.ERROR)

    if inline:
        output_notebook(INLINE, hide_banner=True)
    else:
        output_notebook(hide_banner=True)
    return TrioRunner()
