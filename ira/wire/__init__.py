"""Wire formats of ira: construct schemas of every message, and nothing else.

Each wire module (``ira.wire.link``, ``ira.wire.bus``, ...) holds the construct
definitions of one protocol's messages, frozen dataclasses for the decoded
messages, and one ``encode(msg) -> bytes`` / ``decode(data) -> Message`` pair.
No state, no I/O, no time.

The documentation convention
----------------------------

``docs/PROTOCOL.md`` is *generated* from the wire modules by
``python -m ira.wire.gendoc``, and a test asserts that the committed file equals
the generated text, so the spec cannot drift from the code.  For that, every
wire module exposes a module constant::

    SPEC: WireSpec

built from the dataclasses below:

* ``WireSpec.title`` / ``summary``: a section heading and the prose that opens
  the section (markdown; conventions such as byte order, channels, state).
* ``WireSpec.encode``: the module's ``encode`` function; the generator runs it
  on every golden example.
* ``WireSpec.messages``: one ``MessageSpec`` per message, in tag order:
  its ``name`` (the protocol's name, e.g. ``DEVCALL``), its ``tag`` (the value
  of the discriminating byte), ``schema`` (the construct ``Struct`` of the
  *whole* message, tag included, with a ``* "docstring"`` on every named
  field -- the generator prints those as the field meanings), ``meaning`` (one
  paragraph), and ``example`` (a message instance; its encoding is printed as
  the golden example and must equal the golden vector in the tests).
  ``direction`` and ``channel`` are optional notes for the message table.
* ``WireSpec.limits``: named constants with their values and meanings.
* ``WireSpec.statuses``: status/error codes the protocol carries, if any.
* ``WireSpec.notes``: markdown appended after the messages (state machines,
  ordering rules, worked sequences).

Schemas follow STYLE.md §5: little-endian unless stated, fields from one
``IntEnum`` tag, ``Switch(..., default=Error)``, explicit ``Check``s on every
enum/flags/limit, ``this`` expressions only (no lambdas) so that
``.compile()`` works, and variable-length byte fields written as an explicit
length field followed by ``Bytes(this.<length>)``, so the generator can show
them.  A module is listed in ``ira.wire.gendoc.WIRE_MODULES``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """The documentation record of one message (see the module docstring)."""

    name: str
    tag: int
    #: construct ``Struct`` of the whole message, tag first, fields documented
    schema: Any
    meaning: str
    #: an instance of the message's dataclass; its encoding is the golden example
    example: object
    direction: str = ""
    channel: str = ""


@dataclass(frozen=True, slots=True)
class MessageDef:
    """One message of a tagged protocol, whole: the one place that defines it.

    A wire module lists one entry per message in a table; its union of
    message classes, its tag -> schema and tag -> class maps, its fast-codec
    dispatch and its ``MessageSpec`` records (the document) are all derived from
    that table, and tests hold the module's hand-written union to it.
    """

    #: the tag byte's enum member (its ``name`` is the protocol's name of the message)
    tag: enum.IntEnum
    #: the frozen dataclass of the decoded message
    cls: type[Any]
    #: construct ``Struct`` of the body (everything after the tag byte)
    body: Any
    #: who sends it (``host → board``, ``board → host``, ``both``)
    direction: str
    #: which link channel carries it
    channel: str
    #: one paragraph: what the message means and what its receiver does
    meaning: str
    #: an instance of ``cls``; its encoding is the golden example of the document
    example: object
    #: a hand-written encoder equal to the schema's byte for byte (tested), for the hot path
    fast_encode: Callable[[Any], bytes] | None = None
    #: a hand-written decoder equal to the schema's (tested), for the hot path
    fast_decode: Callable[[bytes], Any] | None = None

    @property
    def name(self) -> str:
        return self.tag.name


@dataclass(frozen=True, slots=True)
class Limit:
    """A named protocol limit."""

    name: str
    value: int
    meaning: str


@dataclass(frozen=True, slots=True)
class StatusCode:
    """A status value carried on the wire."""

    name: str
    value: int
    meaning: str


@dataclass(frozen=True, slots=True)
class WireSpec:
    """Everything ``ira.wire.gendoc`` needs to document one wire module."""

    title: str
    summary: str
    encode: Callable[[Any], bytes]
    messages: tuple[MessageSpec, ...]
    limits: tuple[Limit, ...] = ()
    statuses: tuple[StatusCode, ...] = ()
    notes: str = ""
