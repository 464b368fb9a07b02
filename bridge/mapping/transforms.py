"""Named transforms between legacy values and FHIR values.

Each transform knows both directions: `to_fhir` for reads and `to_legacy` for
searches and writes. A transform that cannot be reversed says so with
`invertible = False`, and the loader refuses it where a write or a search
parameter would need the reverse. Mapping files name transforms as one-key
steps of a pipeline:

    transform:
      - split: {separator: "^", index: 0}
      - table: {name: marital, as: CodeableConcept}
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from bridge.mapping.tables import CodeTable

__all__ = [
    "TRANSFORMS",
    "BooleanTransform",
    "CaseTransform",
    "Component",
    "DateTimeTransform",
    "DateTransform",
    "JoinTransform",
    "NumberTransform",
    "Pipeline",
    "QuantityTransform",
    "RegexTransform",
    "SplitTransform",
    "TableTransform",
    "TemplateTransform",
    "Transform",
    "TransformError",
    "build_transform",
]


class TransformError(ValueError):
    """A value a transform cannot convert. The message never includes the value."""


class Transform:
    name = ""
    invertible = True
    # True when `to_fhir` builds a new dict or list on every call, holding no None
    # and no empty containers: the resource keeps it as is, without a copy.
    fresh = False
    # True when `to_fhir` never returns a dict or a list (text, a number, a boolean
    # or None): the generated builder then skips the copy check.
    scalar = False

    def to_fhir(self, value: Any) -> Any:
        raise NotImplementedError

    def to_legacy(self, value: Any) -> Any:
        raise TransformError(f"transform '{self.name}' cannot be reversed")

    def accepted(self) -> list[str] | None:
        """The FHIR values `to_legacy` accepts, when they are a closed list."""
        return None


_DATE_TOKENS = {"YYYY": r"(?P<Y>\d{4})", "MM": r"(?P<M>\d{1,2})", "DD": r"(?P<D>\d{1,2})"}
_FHIR_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


class DateTransform(Transform):
    name = "date"
    scalar = True

    def __init__(self, fmt: str) -> None:
        pattern = ascii_pattern = re.escape(fmt)
        for token, group in _DATE_TOKENS.items():
            if token not in fmt:
                raise TransformError(f"date format '{fmt}' must contain YYYY, MM and DD")
            pattern = pattern.replace(token, group, 1)
            ascii_pattern = ascii_pattern.replace(token, group.replace(r"\d", "[0-9]"), 1)
        self.format = fmt
        self._regex = re.compile(f"^{pattern}$")
        # The common case, text of ASCII digits: the ISO date is assembled from the
        # digits as matched and checked by `date.fromisoformat` (half the time of
        # three `int`s, a `date` and `isoformat`). Anything else takes the general way.
        self._ascii = re.compile(ascii_pattern).fullmatch

    def to_fhir(self, value: Any) -> Any:
        m = self._ascii(value.strip()) if type(value) is str else None
        if m is not None:
            y, mo, d = m.group("Y", "M", "D")
            iso = f"{y}-{mo if len(mo) == 2 else '0' + mo}-{d if len(d) == 2 else '0' + d}"
            try:
                datetime.date.fromisoformat(iso)
            except ValueError:
                raise TransformError(f"not a date in the format {self.format}") from None
            return iso
        m = self._regex.match(str(value).strip())
        if m is None:
            raise TransformError(f"not a date in the format {self.format}")
        try:
            day = datetime.date(int(m["Y"]), int(m["M"]), int(m["D"]))
        except ValueError:
            raise TransformError(f"not a date in the format {self.format}") from None
        return day.isoformat()

    def to_legacy(self, value: Any) -> Any:
        m = _FHIR_DATE.match(str(value))
        if m is None:
            raise TransformError("needs a full date, YYYY-MM-DD")
        try:
            datetime.date(int(m[1]), int(m[2]), int(m[3]))
        except ValueError:
            raise TransformError("needs a real calendar date, YYYY-MM-DD") from None
        y, mo, d = m.groups()
        return self.format.replace("YYYY", y).replace("MM", mo).replace("DD", d)


@dataclass(frozen=True)
class Component:
    """One part of a delimited legacy value; the writer joins the parts."""

    separator: str
    index: int
    value: str


# What each token of a date-time format writes: the field, and how.
_DT_FIELDS = {
    "YYYY": ("year", "%04d"),
    "MM": ("month", "%02d"),
    "DD": ("day", "%02d"),
    "HH": ("hour", "%02d"),
    "mm": ("minute", "%02d"),
    "ss": ("second", "%02d"),
}
_DT_TOKENS = {
    "YYYY": r"(?P<Y>\d{4})",
    "MM": r"(?P<M>\d{1,2})",
    "DD": r"(?P<D>\d{1,2})",
    "HH": r"(?P<h>\d{1,2})",
    "mm": r"(?P<m>\d{2})",
    "ss": r"(?P<s>\d{2})",
}


class DateTimeTransform(Transform):
    """A legacy local date-time (no offset) in a known zone <-> a FHIR dateTime.

    FHIR requires a zone whenever a time is given, so reads attach the legacy
    system's zone and writes convert whatever zone the client used into it.
    """

    name = "datetime"
    scalar = True

    def __init__(self, fmt: str, zone: str) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            self.zone = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise TransformError(f"unknown time zone '{zone}'") from exc
        pattern = re.escape(fmt)
        for token, group in _DT_TOKENS.items():
            if token in ("ss",) and token not in fmt:
                continue
            if token not in fmt:
                raise TransformError(f"datetime format '{fmt}' must contain {token}")
            pattern = pattern.replace(token, group, 1)
        self.format = fmt
        self._regex = re.compile(f"^{pattern}$")
        # Writing: the format as a %-template of each token's first place (tokens
        # share no letters, so no two overlap), filled from the local time's fields.
        places = sorted((fmt.index(token), token) for token in _DT_FIELDS if token in fmt)
        template, end = "", 0
        for at, token in places:
            template += fmt[end:at].replace("%", "%%") + _DT_FIELDS[token][1]
            end = at + len(token)
        self._template = template + fmt[end:].replace("%", "%%")
        self._fields = attrgetter(*(_DT_FIELDS[token][0] for _, token in places))

    def to_fhir(self, value: Any) -> Any:
        m = self._regex.match(str(value).strip())
        if m is None:
            raise TransformError(f"not a date-time in the format {self.format}")
        try:
            local = datetime.datetime(
                int(m["Y"]),
                int(m["M"]),
                int(m["D"]),
                int(m["h"]),
                int(m["m"]),
                int(m.groupdict().get("s") or 0),
                tzinfo=self.zone,
            )
        except ValueError:
            raise TransformError(f"not a date-time in the format {self.format}") from None
        return local.isoformat()

    def to_legacy(self, value: Any) -> Any:
        text = str(value).strip()
        try:
            moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise TransformError("needs a FHIR dateTime like 2026-11-24T09:30:00-05:00") from None
        if moment.tzinfo is None:
            if len(text) > 10:
                raise TransformError("a dateTime with a time needs a time zone")
            moment = moment.replace(tzinfo=self.zone)
        return self._template % self._fields(self._local(moment))

    def _local(self, moment: datetime.datetime) -> datetime.datetime:
        """`moment` on the legacy zone's wall clock, or TransformError past the calendar."""
        try:
            return moment.astimezone(self.zone)
        except (OverflowError, ValueError):
            pass
        # Within a day of 0001-01-01 or 9999-12-31, the UTC time Python converts
        # through may be off the calendar though the local time is not: convert a
        # day nearer the middle and step back (the same offset, or no answer).
        day = datetime.timedelta(days=1 if moment.year > 1 else -1)
        try:
            near = (moment - day).astimezone(self.zone)
            local = near + day
        except (OverflowError, ValueError):
            local = None
        if local is None or local.utcoffset() != near.utcoffset():
            raise TransformError(
                f"needs a dateTime that falls within the years 0001 to 9999 in the legacy "
                f"system's time zone ({self.zone.key})"
            )
        return local


# UCUM units the quantity transform converts between: (dimension, factor to base).
_UCUM: dict[str, tuple[str, float]] = {
    "kg": ("mass", 1.0),
    "g": ("mass", 0.001),
    "[lb_av]": ("mass", 0.45359237),
    "[oz_av]": ("mass", 0.028349523125),
    "m": ("length", 1.0),
    "cm": ("length", 0.01),
    "mm": ("length", 0.001),
    "[in_i]": ("length", 0.0254),
    "[ft_i]": ("length", 0.3048),
    "Cel": ("temperature", 1.0),
    "/min": ("rate", 1.0),
    "{beats}/min": ("rate", 1.0),
    "{steps}": ("count", 1.0),
    "1": ("count", 1.0),
    "mm[Hg]": ("pressure", 1.0),
    "%": ("fraction", 1.0),
}
_UNIT_NAMES = {
    "kg": "kg",
    "g": "g",
    "[lb_av]": "lb",
    "[oz_av]": "oz",
    "cm": "cm",
    "m": "m",
    "mm": "mm",
    "[in_i]": "in",
    "[ft_i]": "ft",
    "Cel": "C",
    "/min": "/min",
    "{beats}/min": "beats/minute",
    "{steps}": "steps",
    "1": "1",
    "mm[Hg]": "mmHg",
    "%": "%",
}


class QuantityTransform(Transform):
    """A legacy number in a fixed unit <-> a FHIR Quantity in a UCUM unit.

    Reads give `{value, unit, system, code}` in the FHIR unit; writes take a
    Quantity in any UCUM unit of the same dimension and convert it.
    """

    name = "quantity"
    fresh = True

    def __init__(self, legacy: str, fhir: str, decimals: int) -> None:
        for unit in (legacy, fhir):
            if unit not in _UCUM:
                raise TransformError(f"unknown UCUM unit '{unit}'; known: {', '.join(_UCUM)}")
        if _UCUM[legacy][0] != _UCUM[fhir][0]:
            raise TransformError(f"'{legacy}' and '{fhir}' measure different things")
        self.legacy = legacy
        self.fhir = fhir
        self.decimals = decimals

    def _convert(self, number: float, source: str, target: str) -> float:
        return number * _UCUM[source][1] / _UCUM[target][1]

    def to_fhir(self, value: Any) -> Any:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise TransformError("not a number") from None
        converted = round(self._convert(number, self.legacy, self.fhir), self.decimals)
        if not math.isfinite(converted):  # "1e999", "nan": FHIR decimals are finite
            raise TransformError("not a finite number")
        if self.decimals == 0:
            converted = int(converted)
        return {
            "value": converted,
            "unit": _UNIT_NAMES.get(self.fhir, self.fhir),
            "system": "http://unitsofmeasure.org",
            "code": self.fhir,
        }

    def to_legacy(self, value: Any) -> Any:
        if not isinstance(value, dict) or "value" not in value:
            raise TransformError("needs a Quantity with a value")
        code = value.get("code") or self.fhir
        if code not in _UCUM or _UCUM[code][0] != _UCUM[self.fhir][0]:
            raise TransformError(f"the unit '{code}' cannot be converted to '{self.legacy}'")
        try:
            number = float(value["value"])
        except (TypeError, ValueError, OverflowError):
            raise TransformError("the Quantity's value is not a number") from None
        converted = round(self._convert(number, code, self.legacy), max(self.decimals, 2))
        if not math.isfinite(converted):  # never "inf" or "nan" to the legacy system
            raise TransformError(f"the Quantity's value is too large to write in '{self.legacy}'")
        text = f"{converted:.{max(self.decimals, 2)}f}".rstrip("0").rstrip(".")
        return text or "0"


class SplitTransform(Transform):
    """One component of a delimited value, like `LAST^FIRST^MIDDLE`.

    Writing gives a `Component`: the fields that share the legacy element are
    joined back into one value, with empty parts where none was given.
    """

    name = "split"
    scalar = True

    def __init__(self, separator: str, index: int) -> None:
        if not separator:
            raise TransformError("'separator' must not be empty")
        self.separator = separator
        self.index = index

    def to_fhir(self, value: Any) -> Any:
        parts = str(value).split(self.separator)
        if self.index >= len(parts):
            return None
        part = parts[self.index].strip()
        return part or None

    def to_legacy(self, value: Any) -> Any:
        text = str(value)
        if self.separator in text:
            raise TransformError(f"a value may not contain the separator '{self.separator}'")
        return Component(self.separator, self.index, text)


class JoinTransform(Transform):
    """Several legacy values joined into one (an id made of two keys); one way."""

    name = "join"
    invertible = False

    def __init__(self, separator: str) -> None:
        self.separator = separator

    def to_fhir(self, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return self.separator.join(str(v) for v in value)
        return value


class RegexTransform(Transform):
    """The first group a regular expression finds in the legacy value (one way)."""

    name = "regex"
    scalar = True
    invertible = False

    def __init__(self, pattern: str) -> None:
        try:
            self.regex = re.compile(pattern)
        except re.error as exc:
            raise TransformError(f"not a regular expression: {exc}") from None
        if self.regex.groups < 1:
            raise TransformError("the regular expression needs a group: (...)")

    def to_fhir(self, value: Any) -> Any:
        m = self.regex.search(str(value))
        return m.group(1) if m and m.group(1) else None


class CaseTransform(Transform):
    """Upper, lower or title case (one way: the original case is lost)."""

    name = "case"
    scalar = True
    invertible = False

    def __init__(self, kind: str) -> None:
        if kind not in ("upper", "lower", "title"):
            raise TransformError(f"'case' is upper, lower or title, not '{kind}'")
        self.kind = kind

    def to_fhir(self, value: Any) -> Any:
        text = str(value)
        return (
            text.upper()
            if self.kind == "upper"
            else text.lower()
            if self.kind == "lower"
            else text.title()
        )


class TableTransform(Transform):
    name = "table"
    fresh = True

    def __init__(self, table: CodeTable, shape: str, unmapped: str) -> None:
        self.table = table
        self.shape = shape
        self.unmapped = unmapped
        # Each local code's Coding, made once; every answer gets its own copy.
        self._codings = {
            local: {"system": e.system, "code": e.code, "display": e.display}
            if e.display
            else {"system": e.system, "code": e.code}
            for local, e in table.by_local.items()
        }

    def to_fhir(self, value: Any) -> Any:
        local = (value if type(value) is str else str(value)).strip()
        coding = self._codings.get(local)
        if coding is None:
            if self.unmapped == "text" and self.shape == "CodeableConcept":
                return {"text": local}
            return None
        shape = self.shape
        if shape == "code":
            return coding["code"]
        if shape == "Coding":
            return coding.copy()
        display = coding.get("display")
        if display:
            return {"coding": [coding.copy()], "text": display}
        return {"coding": [coding.copy()]}

    def to_legacy(self, value: Any) -> Any:
        code = value
        if isinstance(value, dict):
            codings = value.get("coding") or ([value] if "code" in value else [])
            for coding in codings:
                entry = self.table.by_code.get(str(coding.get("code")))
                if entry is not None and coding.get("system") in (None, entry.system):
                    return entry.local
            raise TransformError(f"no code from table '{self.table.name}'")
        entry = self.table.by_code.get(str(code))
        if entry is None:
            raise TransformError(f"not a code of table '{self.table.name}'")
        return entry.local

    def accepted(self) -> list[str] | None:
        return self.table.codes()


class BooleanTransform(Transform):
    name = "boolean"
    scalar = True

    def __init__(self, true: str, false: str) -> None:
        self.true = true
        self.false = false

    def to_fhir(self, value: Any) -> Any:
        text = str(value).strip()
        if text == self.true:
            return True
        if text == self.false:
            return False
        raise TransformError(f"expected '{self.true}' or '{self.false}'")

    def to_legacy(self, value: Any) -> Any:
        if value in (True, "true"):
            return self.true
        if value in (False, "false"):
            return self.false
        raise TransformError("expected true or false")

    def accepted(self) -> list[str] | None:
        return ["true", "false"]


class TemplateTransform(Transform):
    """Wraps a value in fixed text, like a reference: `Patient/{}`."""

    name = "template"
    scalar = True

    def __init__(self, template: str) -> None:
        if template.count("{}") != 1:
            raise TransformError("a template must contain '{}' exactly once")
        self.prefix, self.suffix = template.split("{}")

    def to_fhir(self, value: Any) -> Any:
        return f"{self.prefix}{value}{self.suffix}"

    def to_legacy(self, value: Any) -> Any:
        text = str(value)
        if not (text.startswith(self.prefix) and text.endswith(self.suffix)):
            raise TransformError(f"expected {self.prefix}…{self.suffix}")
        return text[len(self.prefix) : len(text) - len(self.suffix)]


class NumberTransform(Transform):
    name = "number"
    scalar = True

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def to_fhir(self, value: Any) -> Any:
        try:
            return int(value) if self.kind == "integer" else float(value)
        except ValueError as exc:
            raise TransformError(f"not {_article(self.kind)}") from exc

    def to_legacy(self, value: Any) -> Any:
        return str(value)


@dataclass(frozen=True)
class Pipeline:
    steps: tuple[Transform, ...] = ()

    @property
    def invertible(self) -> bool:
        return all(s.invertible for s in self.steps)

    def to_fhir(self, value: Any) -> Any:
        for step in self.steps:
            if value is None:
                return None
            value = step.to_fhir(value)
        return value

    def to_legacy(self, value: Any) -> Any:
        for step in reversed(self.steps):
            value = step.to_legacy(value)
        return value

    def accepted(self) -> list[str] | None:
        return self.steps[-1].accepted() if self.steps else None


_TYPE_NAMES: dict[type, str] = {
    str: "text",
    int: "a whole number",
    bool: "true or false",
    float: "a number",
}


def _article(noun: str) -> str:
    return f"an {noun}" if noun[:1] in "aeiou" else f"a {noun}"


def _args(raw: Any, shorthand: str, allowed: dict[str, type]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raw = {shorthand: raw}
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise TransformError(f"unknown argument '{unknown[0]}'; known: {', '.join(allowed)}")
    for key, typ in allowed.items():
        if key in raw and not isinstance(raw[key], typ):
            raise TransformError(f"argument '{key}' must be {_TYPE_NAMES[typ]}")
    return dict(raw)


def _date(raw: Any, tables: Mapping[str, CodeTable]) -> Transform:
    args = _args(raw, "format", {"format": str})
    if "format" not in args:
        raise TransformError("'date' needs a format, e.g. MM/DD/YYYY")
    return DateTransform(args["format"])


def _split(raw: Any, tables: Mapping[str, CodeTable]) -> Transform:
    args = _args(raw, "separator", {"separator": str, "index": int})
    return SplitTransform(args.get("separator", "^"), args.get("index", 0))


def _table(raw: Any, tables: Mapping[str, CodeTable]) -> Transform:
    args = _args(raw, "name", {"name": str, "as": str, "unmapped": str})
    name = args.get("name", "")
    if name not in tables:
        known = ", ".join(sorted(tables)) or "none (add CSV files to tables/)"
        raise TransformError(f"no code table '{name}'; known: {known}")
    shape = args.get("as", "code")
    if shape not in ("code", "Coding", "CodeableConcept"):
        raise TransformError(f"'as' must be code, Coding or CodeableConcept, not '{shape}'")
    unmapped = args.get("unmapped", "drop")
    if unmapped not in ("drop", "text"):
        raise TransformError(f"'unmapped' must be drop or text, not '{unmapped}'")
    return TableTransform(tables[name], shape, unmapped)


def _boolean(raw: Any, tables: Mapping[str, CodeTable]) -> Transform:
    if not isinstance(raw, dict):
        raise TransformError("'boolean' needs {true: ..., false: ...}")
    args = _args({str(k).lower(): v for k, v in raw.items()}, "true", {"true": str, "false": str})
    if "true" not in args or "false" not in args:
        raise TransformError("'boolean' needs both 'true' and 'false'")
    return BooleanTransform(args["true"], args["false"])


def _template(raw: Any, tables: Mapping[str, CodeTable]) -> Transform:
    args = _args(raw, "template", {"template": str})
    return TemplateTransform(args.get("template", ""))


def _number(kind: str) -> Callable[[Any, Mapping[str, CodeTable]], Transform]:
    def build(raw: Any, tables: Mapping[str, CodeTable]) -> Transform:
        return NumberTransform(kind)

    return build


def _datetime(raw: Any, tables: Mapping[str, CodeTable]) -> Transform:
    args = _args(raw, "format", {"format": str, "zone": str})
    if "format" not in args or "zone" not in args:
        raise TransformError("'datetime' needs a format and a zone, e.g. America/New_York")
    return DateTimeTransform(args["format"], args["zone"])


def _quantity(raw: Any, tables: Mapping[str, CodeTable]) -> Transform:
    args = _args(raw, "legacy", {"legacy": str, "fhir": str, "decimals": int})
    if "legacy" not in args:
        raise TransformError("'quantity' needs the legacy unit, e.g. {legacy: '[lb_av]', fhir: kg}")
    return QuantityTransform(
        args["legacy"], args.get("fhir", args["legacy"]), args.get("decimals", 2)
    )


def _join(raw: Any, tables: Mapping[str, CodeTable]) -> Transform:
    args = _args(raw, "separator", {"separator": str})
    return JoinTransform(args.get("separator", "-"))


def _regex(raw: Any, tables: Mapping[str, CodeTable]) -> Transform:
    args = _args(raw, "pattern", {"pattern": str})
    return RegexTransform(args.get("pattern", ""))


def _case(raw: Any, tables: Mapping[str, CodeTable]) -> Transform:
    args = _args(raw, "to", {"to": str})
    return CaseTransform(args.get("to", ""))


TRANSFORMS: dict[str, Callable[[Any, Mapping[str, CodeTable]], Transform]] = {
    "boolean": _boolean,
    "case": _case,
    "regex": _regex,
    "date": _date,
    "datetime": _datetime,
    "quantity": _quantity,
    "decimal": _number("decimal"),
    "integer": _number("integer"),
    "join": _join,
    "split": _split,
    "table": _table,
    "template": _template,
}


def build_transform(step: Mapping[str, Any], tables: Mapping[str, CodeTable]) -> Transform:
    if len(step) != 1:
        raise TransformError("each transform step is one key naming the transform")
    ((name, raw),) = step.items()
    factory = TRANSFORMS.get(name)
    if factory is None:
        raise TransformError(f"unknown transform '{name}'; known: {', '.join(sorted(TRANSFORMS))}")
    return factory(raw, tables)
