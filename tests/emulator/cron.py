"""
Cron schedules as a CronJob's ``spec.schedule`` is parsed by the API server (robfig/cron's standard parser:
five fields, or a descriptor). Our own code, with its error messages.

    errors("61 25 * * *")  # -> ["End of range (61) above maximum (59): 61"]
"""

from __future__ import annotations

from dataclasses import dataclass

DESCRIPTORS = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})


@dataclass(frozen=True)
class _Field:
    minimum: int
    maximum: int
    names: tuple[str, ...] = ()  # names of the values from `minimum` on
    question: bool = False  # "?" allowed (day of month and day of week)


_FIELDS = (
    _Field(0, 59),
    _Field(0, 23),
    _Field(1, 31, question=True),
    _Field(1, 12, ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")),
    _Field(0, 6, ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), question=True),
)


class CronError(ValueError):
    pass


def _number(text: str, field: _Field) -> int:
    upper = text.upper()
    if upper in field.names:
        return field.minimum + field.names.index(upper)
    if not text.isdigit():
        raise CronError(f"Failed to parse int from {text}: strconv.Atoi: parsing {text!r}: invalid syntax")
    return int(text)


def _range(expr: str, field: _Field) -> None:
    range_and_step = expr.split("/")
    low_and_high = range_and_step[0].split("-")
    single = len(low_and_high) == 1
    if low_and_high[0] in ("*", "?"):
        if low_and_high[0] == "?" and not field.question:
            raise CronError(f"Failed to parse int from ?: strconv.Atoi: parsing {'?'!r}: invalid syntax")
        start, end = field.minimum, field.maximum
    else:
        start = _number(low_and_high[0], field)
        if len(low_and_high) == 1:
            end = start
        elif len(low_and_high) == 2:
            end = _number(low_and_high[1], field)
        else:
            raise CronError(f"Too many hyphens: {expr}")
    if len(range_and_step) == 2:
        step = _number(range_and_step[1], field)
        if step <= 0:
            raise CronError(f"Step of range should be a positive number: {expr}")
        if single and low_and_high[0] not in ("*", "?"):
            end = field.maximum
    elif len(range_and_step) > 2:
        raise CronError(f"Too many slashes: {expr}")
    if start < field.minimum:
        raise CronError(f"Beginning of range ({start}) below minimum ({field.minimum}): {expr}")
    if end > field.maximum:
        raise CronError(f"End of range ({end}) above maximum ({field.maximum}): {expr}")
    if start > end:
        raise CronError(f"Beginning of range ({start}) beyond end of range ({end}): {expr}")


def errors(schedule: str) -> list[str]:
    """What is wrong with `schedule` (empty when the API server accepts it)."""
    text = schedule.strip()
    if not text:
        return ["empty spec string"]
    if text.startswith("@"):
        if text in DESCRIPTORS or text.startswith("@every "):
            return []
        return [f"Unrecognized descriptor: {text}"]
    if text.startswith(("TZ=", "CRON_TZ=")):
        return ["cannot use TZ or CRON_TZ in schedule, use timeZone field instead"]
    fields = text.split()
    if len(fields) != 5:
        return [f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]"]
    try:
        for value, field in zip(fields, _FIELDS, strict=True):
            for expr in value.split(","):
                _range(expr, field)
    except CronError as e:
        return [str(e)]
    return []
