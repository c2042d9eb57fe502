"""Device types by name: what a board profile's ``[[device]]`` entries may ask for.

Each layer that has device models declares its types (``DeviceType``: a
factory and the options it takes, each with its type, default and range) and
offers a ``register_device_types(types)`` function; the runtime, which sits
above every layer, fills one ``DeviceTypes`` with all of them.  So this module
knows no device, and no layer imports one above it to name its devices.

A ``DeviceSpec`` (one ``[[device]]`` entry) is checked against its type before
anything is built (``DeviceTypes.problem``): the profile parser does it to
report the file, line and key; ``build`` does it again for specs made in code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from ira.busmodel.device import Device
from ira.errors import ConfigError

#: the TOML values an option may take
OptionValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Option:
    """One option of a device type."""

    name: str
    #: its TOML type
    kind: type[bool] | type[int] | type[str]
    #: one line for the documentation and error messages
    doc: str
    #: what it is when the entry does not give it (``None``: see ``doc``)
    default: bool | int | str | None = None
    #: integers: the range, inclusive
    minimum: int | None = None
    maximum: int | None = None
    #: strings: parses the value, raising ``ValueError`` or ``ConfigError`` when it is not valid
    parse: Callable[[str], object] | None = None

    def problem(self, value: object) -> str | None:
        """Why ``value`` is not valid for this option, or None."""
        if self.kind is bool:
            return None if isinstance(value, bool) else "must be true or false"
        if self.kind is int:
            if not isinstance(value, int) or isinstance(value, bool):
                return f"must be an integer{self._range()}"
            low, high = self.minimum, self.maximum
            if (low is not None and value < low) or (high is not None and value > high):
                return f"{value} is out of range{self._range()}"
            return None
        if not isinstance(value, str):
            return f"must be a string ({self.doc})"
        if self.parse is not None:
            try:
                self.parse(value)
            except (ValueError, ConfigError) as exc:
                return f"{value!r} is not valid: {exc}"
        return None

    def _range(self) -> str:
        if self.minimum is None and self.maximum is None:
            return ""
        low = "" if self.minimum is None else self.minimum
        high = "" if self.maximum is None else self.maximum
        return f" ({low}..{high})"


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One ``[[device]]`` entry."""

    #: unique within the profile; what a reload matches devices by
    name: str
    #: the device type's name (a key of ``DeviceTypes``)
    type: str
    #: options given, sorted by key (defaults are not filled in)
    options: tuple[tuple[str, OptionValue], ...] = ()

    def option(self, name: str) -> OptionValue | None:
        """The value given for option ``name``, or None."""
        for key, value in self.options:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class DeviceContext:
    """What a device factory may use besides its options."""

    board: str
    #: monotonic seconds when the board started
    started_at: float
    #: the link core's numeric statistics, for board-info
    link_statistics: Callable[[], Mapping[str, int | float]] | None = None


DeviceFactory = Callable[[DeviceSpec, DeviceContext], Device]


@dataclass(frozen=True, slots=True)
class DeviceType:
    """A device type: its name in profiles, a factory and the options it takes."""

    name: str
    factory: DeviceFactory
    #: one line for the documentation
    doc: str
    options: tuple[Option, ...] = ()

    def option(self, name: str) -> Option | None:
        for option in self.options:
            if option.name == name:
                return option
        return None


def int_option(spec: DeviceSpec, name: str, default: int) -> int:
    """An integer option of a checked spec (``default`` when not given)."""
    value = spec.option(name)
    return default if value is None or isinstance(value, bool) else int(value)


def bool_option(spec: DeviceSpec, name: str, default: bool) -> bool:
    """A boolean option of a checked spec (``default`` when not given)."""
    value = spec.option(name)
    return default if not isinstance(value, bool) else value


def str_option(spec: DeviceSpec, name: str) -> str | None:
    """A string option of a checked spec, or None when not given."""
    value = spec.option(name)
    return value if isinstance(value, str) else None


class DeviceTypes:
    """The device types a board knows, by name."""

    def __init__(self, types: Iterable[DeviceType] = ()) -> None:
        self._types: dict[str, DeviceType] = {}
        for dtype in types:
            self.register(dtype)

    def register(self, dtype: DeviceType) -> None:
        """Add ``dtype``; a second type of the same name is a ``ConfigError``."""
        if dtype.name in self._types:
            raise ConfigError(f"device type {dtype.name!r} is registered twice")
        self._types[dtype.name] = dtype

    def get(self, name: str) -> DeviceType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def __iter__(self) -> Iterator[DeviceType]:
        return iter(self._types.values())

    def problem(self, spec: DeviceSpec) -> tuple[tuple[str, ...], str] | None:
        """The first thing wrong with ``spec`` as (key path within the entry, why), or None."""
        dtype = self._types.get(spec.type)
        if dtype is None:
            return ("type",), f"unknown device type {spec.type!r}; one of {', '.join(self.names())}"
        for key, value in spec.options:
            option = dtype.option(key)
            if option is None:
                shown = ", ".join(o.name for o in dtype.options) or "none"
                return ("options", key), f"not an option of {spec.type!r} (options: {shown})"
            why = option.problem(value)
            if why is not None:
                return ("options", key), why
        return None

    def build(self, spec: DeviceSpec, ctx: DeviceContext) -> Device:
        """A new device model for ``spec``; ``ConfigError`` if the spec does not fit its type."""
        problem = self.problem(spec)
        if problem is not None:
            keys, why = problem
            raise ConfigError(f"device {spec.name!r}: {'.'.join(keys)}: {why}")
        dtype = self._types[spec.type]
        return dtype.factory(spec, ctx)
