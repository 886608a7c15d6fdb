"""The notebook widget for Bokeh models: jupyter_bokeh's, minus the browser's echoes.

jupyter_bokeh's view (4.x) applies each patch from the kernel to BokehJS's document and then
sends back *every* change that applying it caused, including the patch's own changes (BokehJS
marks them ``sync=False``, which Bokeh's server session honours and jupyter_bokeh's view does
not). The kernel applies those echoes as if the learner had made them, late: an echo of
``source.data = {...}`` that arrives after the kernel streamed more rows resets the kernel's
data to the older value (the browser keeps the newer one, as the kernel never tells it), an
echoed ``stream`` appends the same rows a second time, and an echoed ``slider.value`` moves
the kernel's cursor back, so the diagram stops following. :class:`BokehWidget` drops them:

* data (``ColumnDataSource.data``, its streams and patches) is the kernel's alone: nothing
  in the browser edits it, so every data change from the browser is an echo;
* any other property change is an echo when its value is one of the last values the kernel
  sent for that property (one view or several); a learner's change to any other value (the
  scrubber, the play button, the speed) reaches the kernel as before.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Final

from bokeh.core.serialization import Deserializer, Serialized
from bokeh.document.events import DocumentPatchedEvent, ModelChangedEvent
from bokeh.models import ColumnarDataSource, LayoutDOM
from jupyter_bokeh.widgets import BokehModel

__all__ = ["ECHO_HISTORY", "BokehWidget"]

#: values remembered per property sent to the browser (echoes arrive within a few patches)
ECHO_HISTORY: Final = 32
_DATA_EVENTS: Final = frozenset({"ColumnsStreamed", "ColumnsPatched", "ColumnDataChanged"})


class BokehWidget(BokehModel):  # type: ignore[misc]
    """Show Bokeh models in a notebook; ignore the browser's echoes of the kernel's changes."""

    def __init__(self, model: LayoutDOM, **kwargs: Any) -> None:
        self._sent: dict[tuple[str, str], deque[Any]] = {}
        self.echoes = 0  #: browser messages dropped as echoes (for tests and curiosity)
        super().__init__(model, **kwargs)

    def _document_patched(self, event: DocumentPatchedEvent) -> None:
        if event.setter is not self and isinstance(event, ModelChangedEvent):
            key = (str(event.model.id), event.attr)
            sent = self._sent.get(key)
            if sent is None:
                sent = self._sent[key] = deque(maxlen=ECHO_HISTORY)
            sent.append(_snapshot(event.new))
        super()._document_patched(event)

    def _sync_model(self, model: BokehModel, content: dict[str, Any], buffers: list[Any]) -> None:
        if content.get("event", "") == "jsevent" and self._is_echo(content):
            self.echoes += 1
            return
        super()._sync_model(model, content, buffers)

    def _is_echo(self, content: dict[str, Any]) -> bool:
        kind = content.get("kind")
        if kind in _DATA_EVENTS:
            return True
        if kind != "ModelChanged":
            return False
        ref, attr = content.get("model"), content.get("attr")
        document = self._document
        if not isinstance(ref, dict) or not isinstance(attr, str) or document is None:
            return False
        target = document.get_model_by_id(ref.get("id"))  # type: ignore[arg-type]
        if target is None:
            return False
        if isinstance(target, ColumnarDataSource) and attr == "data":
            return True
        sent = self._sent.get((str(target.id), attr))
        if not sent:
            return False
        body = {k: v for k, v in content.items() if k != "event"}
        event = Deserializer(list(document.models), setter=self).deserialize(
            Serialized(content=body, buffers=[]))
        new = target.lookup(attr).property.prepare_value(target, attr, event["new"])
        return any(_same(new, old) for old in sent)


def _snapshot(value: Any) -> Any:
    """Return a copy of ``value`` that later in-place changes do not reach."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


def _same(a: Any, b: Any) -> bool:
    """Tell whether a value from the page equals one the kernel sent (JSON turns 1.0 into 1,
    and Bokeh wraps lists and dicts in its own container types)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    for kinds in ((int, float), dict, (list, tuple)):
        if isinstance(a, kinds) and isinstance(b, kinds):
            break
    else:
        if type(a) is not type(b):
            return False
    try:
        return bool(a == b)
    except (TypeError, ValueError):  # e.g. arrays without a single truth value
        return False
