"""Recorded sessions (spec/sessions.md), pure: the data model (`model`), the splitter that cuts a
byte stream into messages (`splitter`) and the JSON document form (`document`).

Reading and writing session files, the recording proxy and replay are the suite's tools:
`conformance.recording` and `conformance.replay`.
"""

from . import document, model, splitter
from .document import *  # noqa: F403
from .model import *  # noqa: F403
from .splitter import *  # noqa: F403

__all__ = [*document.__all__, *model.__all__, *splitter.__all__]
