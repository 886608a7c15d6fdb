"""Fixtures for the interop tests: real js-libp2p peers from interop/js.

Every test here runs real processes on loopback sockets, so it runs on trio's real
clock (never ``autojump_clock``) and bounds each wait with a timeout. The helper lives
in ``jspeer.py`` beside this file: ``from jspeer import run_js_peer``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from jspeer import JsPeer, JsSetupError, require_js_setup, run_js_peer


@pytest.fixture(autouse=True)
def _js_setup() -> None:
    """Fail (not skip) with the fix when node or interop/js/node_modules is missing."""
    try:
        require_js_setup()
    except JsSetupError as err:
        pytest.fail(str(err), pytrace=False)


@pytest.fixture
async def js_listener() -> AsyncIterator[JsPeer]:
    """Yield a serving js-libp2p peer on 127.0.0.1 (TCP, Noise, yamux then mplex)."""
    async with run_js_peer("--agent", "flarelab-interop/js-listener") as peer:
        yield peer
