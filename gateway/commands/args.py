"""The arguments each command takes, as pydantic models, and the one way to read them.

Owns the argument models of the MQTT commands (`AlarmArgs`, `UnlockArgs`, `ReplayArgs`, ...) and
of the control socket's ops (`ResetRequest`, `DeviceRequest`, ...): strict types (no "5" for 5,
no true for 1, no 5.0 for 5), bounded numbers (seqs 1..2**63-1, doors 1..255) and no unknown
field (`extra="forbid"`). `parse_args` validates a received mapping against one of them and
turns pydantic's errors into one `BadArgs` sentence, the same sentence a sender got before the
models existed ("door must be an integer 1..255", "unknown argument(s) ['note']; takes [...]").

It does not know which command takes which model, who may send it, or what a command does:
that is gateway.commands.registry and the handlers it names.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import ErrorDetails

MAX_SEQ = 2**63 - 1
"""Event seqs are SQLite integers: 1..2**63-1."""
MAX_REPLAY_SPAN = 10_000
DEFAULT_DRILL_MINUTES = 60
MAX_NAME = 200
"""The longest `by` or alarm id a control-socket request may carry."""
TIMESTAMP_PATTERN = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:"
    r"[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
"""What the contract asks of a time a receiver writes (the gateway reads any ISO 8601 time with
an offset: it refuses what is ambiguous, not what is spelled otherwise)."""


class BadArgs(ValueError):
    """The command's arguments are not what it takes; the message says what is wrong."""


def epoch_ms(text: str) -> int:
    """ISO 8601 with a UTC offset to epoch milliseconds; ValueError with the reason otherwise."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("time must be ISO 8601 with an offset") from None
    if when.utcoffset() is None:
        raise ValueError("time must carry a UTC offset")
    return round(when.timestamp() * 1000)


def _has_offset(text: str) -> str:
    epoch_ms(text)
    return text


Text = Annotated[str, Field(min_length=1)]
Seq = Annotated[int, Field(ge=1, le=MAX_SEQ)]
Timestamp = Annotated[
    Text, AfterValidator(_has_offset), Field(json_schema_extra={"pattern": TIMESTAMP_PATTERN})
]
Name = Annotated[str, Field(max_length=MAX_NAME)]


class Args(BaseModel):
    """A command's arguments: strict, frozen, nothing unknown."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    schema_name: ClassVar[str] = ""
    """Its name under the command schema's `$defs` (several commands may share a model)."""
    field_refusals: ClassVar[Mapping[str, str]] = {}
    """A field's refusal, when it is not the one read from its type (`field_refusal`); a
    subclass names only its own fields, the refusals of its bases hold for it too."""
    unknown_refusal: ClassVar[str] = "unknown argument(s) {unknown}; takes {takes}"


def field_refusal(model: type[Args], field: str) -> str:
    """The sentence that refuses a bad `field` of `model`: from the model when it says one,
    else from the field's type and bounds ("door must be an integer 1..255")."""
    for owner in model.__mro__:  # a subclass's refusal first, then what its bases say
        refusals = vars(owner).get("field_refusals", {})
        if field in refusals:
            return str(refusals[field])
    info = model.model_fields[field]
    if info.annotation is int:
        # Every int argument is bounded: its metadata holds annotated_types' Ge and Le.
        bounds = {k: getattr(m, k) for m in info.metadata for k in ("ge", "le") if hasattr(m, k)}
        low, high = bounds.get("ge"), bounds.get("le")
        return f"{field} must be an integer {low}..{high}"
    return f"{field} must be a non-empty string"


def _explain(model: type[Args], errors: list[ErrorDetails]) -> str:
    fields = list(model.model_fields)
    unknown = sorted(str(e["loc"][0]) for e in errors if e["type"] == "extra_forbidden")
    if unknown:
        return model.unknown_refusal.format(unknown=unknown, takes=fields or "none")

    def order(error: ErrorDetails) -> int:
        loc = error["loc"]
        return fields.index(str(loc[0])) if loc and loc[0] in fields else len(fields)

    first = min(errors, key=order)
    if first["type"] == "value_error":  # one of our validators: its own sentence
        return str(first.get("ctx", {}).get("error", first["msg"]))
    return field_refusal(model, str(first["loc"][0]))


A = TypeVar("A", bound=Args)


def parse_args(model: type[A], raw: Mapping[str, Any]) -> A:
    """`raw` read as `model`, or BadArgs with the first problem in the order of its fields."""
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        raise BadArgs(_explain(model, exc.errors())) from None


# -- the MQTT commands' arguments ----------------------------------------------------------------


class AlarmArgs(Args):
    schema_name: ClassVar[str] = "alarm_args"
    alarm_id: Text = Field(description="the alarm_id of the open alarm (the id of its alarm.panic)")
    by: Text = Field(description="the person who acknowledges or resets")


class BollardArgs(Args):
    schema_name: ClassVar[str] = "bollard_args"
    device: Text = Field(description="a bollard's device id")


class UnlockArgs(Args):
    schema_name: ClassVar[str] = "unlock_args"
    device: Text = Field(description="an access controller's device id")
    door: Annotated[int, Field(ge=1, le=255)] = Field(
        description="a door number in that controller's config"
    )
    open_s: Annotated[int, Field(ge=0, le=255)] = Field(
        default=0,
        description="seconds the door stays unlocked; 0 (the default): the controller's own "
        "setting",
    )


class LockdownArgs(Args):
    schema_name: ClassVar[str] = "lockdown_args"
    device: Text = Field(
        default="", description="one access controller; default: every access controller"
    )
    """"" (never valid when sent): not given."""


class DrillStartArgs(Args):
    schema_name: ClassVar[str] = "drill_start_args"
    minutes: Annotated[int, Field(ge=1, le=24 * 60)] = Field(
        default=DEFAULT_DRILL_MINUTES,
        description=f"how long the drill lasts unless stopped; default {DEFAULT_DRILL_MINUTES}",
    )
    by: Text = Field(default="", description="the person; default: the issuer")
    """"" (never valid when sent): not given."""


class DrillStopArgs(Args):
    schema_name: ClassVar[str] = "drill_stop_args"
    by: Text = Field(default="", description="the person; default: the issuer")
    """"" (never valid when sent): not given."""


class TimeArgs(Args):
    schema_name: ClassVar[str] = "time_args"
    time: Timestamp = Field(default="", description="the time to set; default: the gateway's clock")
    """"" (never valid when sent): not given."""

    @property
    def time_ms(self) -> int | None:
        return epoch_ms(self.time) if self.time else None


class ReplayArgs(Args):
    schema_name: ClassVar[str] = "replay_args"
    from_seq: Seq = Field(description="the first seq, inclusive")
    to_seq: Seq = Field(
        description=f"the last seq, inclusive: from_seq <= to_seq < from_seq + {MAX_REPLAY_SPAN}"
    )

    @model_validator(mode="after")
    def _a_short_forward_range(self) -> ReplayArgs:
        if not self.from_seq <= self.to_seq or self.to_seq - self.from_seq >= MAX_REPLAY_SPAN:
            raise ValueError(f"need 1 <= from_seq <= to_seq, at most {MAX_REPLAY_SPAN} apart")
        return self


class LedgerCloseArgs(Args):
    schema_name: ClassVar[str] = "ledger_close_args"
    entry: Text = Field(description="the ledger entry's id, e.g. 20261124-003")
    note: Text = Field(description="what was done (the repair, or why it is closed)")
    by: Text = Field(default="", description="the person; default: the issuer")
    """"" (never valid when sent): not given."""


# -- the control socket's requests (the fields besides "op") -------------------------------------


class Request(Args):
    field_refusals: ClassVar[Mapping[str, str]] = {
        "by": f"by is a name (a string of 1 to {MAX_NAME} characters)",
    }
    """Every request that names who asks refuses a bad `by` alike."""
    unknown_refusal: ClassVar[str] = "unknown field(s) {unknown}; this op takes {takes}"


class NoFields(Request):
    """`alarms` and `status`: nothing but the op."""


class ResetRequest(Request):
    field_refusals: ClassVar[Mapping[str, str]] = {
        "alarm_id": f"reset needs a string alarm_id (a string of 1 to {MAX_NAME} characters)",
    }
    alarm_id: Annotated[Text, Field(max_length=MAX_NAME)]
    by: Name | None = None
    """None or "": the gateway console."""


class LedgerCloseRequest(Request):
    field_refusals: ClassVar[Mapping[str, str]] = {
        "entry": "ledger_close needs an entry id",
        "note": "ledger_close needs a note saying what was done",
    }
    entry: Annotated[Text, Field(max_length=MAX_NAME)]
    note: Annotated[Text, Field(max_length=2000)]
    by: Name | None = None
    """None or "": the asking user (as the operating system says)."""


class DeviceRequest(Request):
    field_refusals: ClassVar[Mapping[str, str]] = {
        "device": "command needs device, name and an args object",
        "name": "command needs device, name and an args object",
        "args": "command needs device, name and an args object",
    }
    device: str
    name: str
    args: dict[str, Any] = Field(default_factory=dict)
    by: Name | None = None
    """None or "": nobody named."""


MAX_TEST_MINUTES = 240
"""Test mode's longest run (gateway.alarms.test_mode.MAX_MINUTES says why)."""


class TestStartRequest(Request):
    __test__ = False  # not a pytest class, whatever its name
    minutes: Annotated[int, Field(ge=1, le=MAX_TEST_MINUTES)] = 30
    by: Name | None = None
    """None or "": the asker's user name."""


class TestStopRequest(Request):
    __test__ = False
    by: Name | None = None


class WatchRequest(Request):
    field_refusals: ClassVar[Mapping[str, str]] = {
        "device": "watch takes an optional device id (a string)",
    }
    device: Name | None = None
    """None: every device."""


class DrillRequest(Request):
    """`schoolgate drill start|stop`: the school's own drill, through the control socket."""

    field_refusals: ClassVar[Mapping[str, str]] = {
        "start": "drill needs start: true or false",
        "minutes": "minutes is a whole number from 1 to 1440",
    }
    start: bool
    minutes: Annotated[int, Field(ge=1, le=24 * 60)] = DEFAULT_DRILL_MINUTES
    by: Name | None = None
    """None or "": the gateway console."""
