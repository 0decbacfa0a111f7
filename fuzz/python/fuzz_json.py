"""Fuzz the Python-to-JSON conversion of request values (the binding's ``py_to_value``) through the public API.

Each input becomes an arbitrary Python value: nested dicts, lists and tuples, strings with odd Unicode (lone
surrogates, NUL, bidi controls, tokens), ints up to huge, floats including nan and inf, bools, None, objects of other
types (bytes, sets, Decimal, subclasses of the JSON types, enums, NumPy scalars, classes whose type name raises),
cycles and very deep nesting. It goes in as ``messages`` content, as an extra message field, as a message, or as the
whole ``messages``, of ``generate_text`` / ``generate_text_stream`` on an endpoint of a client pointed at a closed
port (127.0.0.1:9) with ``max_retries=0``.

The only outcome allowed is an exception: an ``InferenceKeyError`` (``ValidationError`` for a value JSON cannot carry,
``ApiConnectionError`` once the request is sent), ``TypeError`` or ``ValueError`` (a lone surrogate is a
``UnicodeEncodeError``), or the harness's own ``Boom`` raised by a value's own code. Anything else (RecursionError,
OverflowError, SystemError, a Rust panic) fails the run, and so does a crash of the interpreter. A stack overflow
kills the process before libFuzzer can save the input, so each input is written to `<artifact_prefix>last-input`
before it runs (and faulthandler prints the Python stack): after a crash, that file is the input to replay.

    python fuzz_json.py [libFuzzer flags] [corpus dir]     # atheris, coverage-guided (the harness is instrumented)
    python fuzz_json.py crash-<hash>                        # replay one saved input
    python fuzz_json.py --random [-max_total_time=60] [--seed N]   # no atheris: seeded random values
    python fuzz_json.py ... --no-deep                       # leave out deep nesting and cycles
"""

from __future__ import annotations

import datetime
import decimal
import enum
import faulthandler
import fractions
import math
import os
import random
import sys
import time
from collections import OrderedDict, namedtuple
from collections.abc import Callable
from typing import Any

from inferencekey import DataClient, InferenceKeyError

try:
    import atheris
except ImportError:  # the random mode needs no atheris
    atheris = None

try:
    import numpy
except ImportError:
    numpy = None

ALLOWED = (InferenceKeyError, TypeError, ValueError)
DEEPEST = 200_000


class Boom(Exception):
    """Raised by the harness's own objects while the SDK reads them; passing it through is correct."""


class _RaisingName(type):
    @property
    def __name__(cls) -> str:  # type: ignore[override]
        raise Boom("type name")


class _NonStrName(type):
    @property
    def __name__(cls) -> Any:  # type: ignore[override]
        return 42


_VICTIMS: list[Any] = []


class _MutatingName(type):
    """Empties the containers being converted when its type name is read."""

    @property
    def __name__(cls) -> str:  # type: ignore[override]
        for victim in _VICTIMS:
            victim.clear()
        return "Mutating"


class RaisingName(metaclass=_RaisingName):
    pass


class NonStrName(metaclass=_NonStrName):
    pass


class Mutating(metaclass=_MutatingName):
    pass


class StrSub(str):
    def __str__(self) -> str:
        raise Boom("str")


class IntSub(int):
    def __index__(self) -> int:
        raise Boom("index")

    def __int__(self) -> int:
        raise Boom("int")


class FloatSub(float):
    def __float__(self) -> float:
        raise Boom("float")


class DictSub(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise Boom("items")

    def keys(self) -> Any:
        raise Boom("keys")

    def __iter__(self) -> Any:
        raise Boom("iter")


class ListSub(list):  # type: ignore[type-arg]
    def __iter__(self) -> Any:
        raise Boom("iter")

    def __len__(self) -> int:
        return 10**6


class TupleSub(tuple):  # type: ignore[type-arg]
    def __getitem__(self, index: Any) -> Any:
        raise Boom("getitem")


class Color(enum.IntEnum):
    RED = 1


class Flavor(str, enum.Enum):
    SWEET = "sweet"


Point = namedtuple("Point", "x y")

ODD_STRINGS = [
    "",
    "\x00",
    "\ud800",
    "a\udfffb",
    "\U0010ffff",
    "\uffff\ufffe",
    "\u2028\u2029\x85",
    "\u202e\u2066rtl",
    "e\u0301\u0301\u0301",
    "🦀👩‍👩‍👧",
    "\ufeffbom",
    "\x1b[31m\r\n\t",
    '"\\/',
    "ik_live_a1b2c3d4_0123456789abcdef",
    "ik_sdk_a1b2c3d4_0123456789abcdef",
    "x" * 70_000,
]
HUGE_INTS = [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**400, -(10**400)]
ODD_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308, 1e-320]


def other_objects() -> list[Callable[[], Any]]:
    objects: list[Callable[[], Any]] = [
        lambda: b"bytes",
        lambda: bytearray(b"ba"),
        lambda: {1, 2},
        lambda: frozenset({"a"}),
        lambda: 1 + 2j,
        lambda: decimal.Decimal("1.5"),
        lambda: decimal.Decimal("nan"),
        lambda: fractions.Fraction(1, 3),
        lambda: datetime.datetime(2026, 6, 15, tzinfo=datetime.timezone.utc),
        lambda: object(),
        lambda: range(3),
        lambda: memoryview(b"mv"),
        lambda: Ellipsis,
        lambda: NotImplemented,
        lambda: int,
        lambda: len,
        lambda: lambda: None,
        lambda: iter([1]),
        lambda: (i for i in range(2)),
        lambda: ValueError("e"),
        lambda: StrSub("sub"),
        lambda: IntSub(5),
        lambda: IntSub(2**70),
        lambda: FloatSub(math.nan),
        lambda: FloatSub(1.5),
        lambda: DictSub(a=1),
        lambda: ListSub([1, 2]),
        lambda: TupleSub((1, 2)),
        lambda: OrderedDict(a=[1]),
        lambda: Point(1, 2),
        lambda: Color.RED,
        lambda: Flavor.SWEET,
        lambda: RaisingName(),
        lambda: NonStrName(),
        lambda: Mutating(),
        lambda: True,
    ]
    if numpy is not None:
        objects += [
            lambda: numpy.float32(1.5),
            lambda: numpy.float64(math.nan),
            lambda: numpy.int64(-3),
            lambda: numpy.bool_(True),
            lambda: numpy.str_("np"),
            lambda: numpy.arange(3),
        ]
    return objects


OTHER = other_objects()


class RandomSource:
    """Choices from a seeded generator (the mode without atheris)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def float(self) -> float:
        return self.rng.choice([self.rng.uniform(-1e6, 1e6), self.rng.choice(ODD_FLOATS), float(self.rng.random())])

    def text(self, most: int) -> str:
        return "".join(chr(self.rng.randint(0, 0x10FFFF)) for _ in range(self.rng.randint(0, most)))


class FuzzedSource:
    """Choices read from a libFuzzer input."""

    def __init__(self, data: bytes) -> None:
        assert atheris is not None
        self.fdp = atheris.FuzzedDataProvider(data)

    def int(self, lo: int, hi: int) -> int:
        return int(self.fdp.ConsumeIntInRange(lo, hi))

    def float(self) -> float:
        return float(self.fdp.ConsumeFloat())

    def text(self, most: int) -> str:
        return str(self.fdp.ConsumeUnicode(self.int(0, most)))


Source = RandomSource | FuzzedSource


def deep(src: Source) -> Any:
    """One value nested `depth` times in lists, dicts, tuples or a mix, built without recursion."""
    depth = src.int(1, 64) if src.int(0, 3) else src.int(1, DEEPEST)
    shape = src.int(0, 3)
    value: Any = src.int(-5, 5)
    for level in range(depth):
        kind = shape if shape < 3 else level % 3
        value = [value] if kind == 0 else {"k": value} if kind == 1 else (value,)
    return value


def cycle(src: Source) -> Any:
    """A container that holds itself, directly or through others."""
    kind = src.int(0, 4)
    if kind == 0:
        items: list[Any] = [1]
        items.append(items)
        return items
    if kind == 1:
        table: dict[str, Any] = {"a": 1}
        table["self"] = table
        return table
    if kind == 2:
        outer: list[Any] = []
        inner = {"role": "user", "content": outer}
        outer.append(inner)
        return inner
    if kind == 3:
        holder: list[Any] = []
        looped = (holder,)
        holder.append(looped)
        return looped
    # A long way round: a chain of dicts whose end points back to its start.
    start: dict[str, Any] = {}
    node = start
    for _ in range(src.int(1, 500)):
        node["next"] = {}
        node = node["next"]
    node["next"] = start
    return start


def build(src: Source, budget: list[int], allow_deep: bool) -> Any:
    """An arbitrary value; `budget` bounds the number of nodes."""
    budget[0] -= 1
    kind = src.int(0, 14) if budget[0] > 0 else src.int(0, 5)
    if kind == 0:
        return None
    if kind == 1:
        return bool(src.int(0, 1))
    if kind == 2:
        return src.int(-(2**40), 2**40)
    if kind == 3:
        return HUGE_INTS[src.int(0, len(HUGE_INTS) - 1)] + src.int(-1, 1)
    if kind == 4:
        return src.float()
    if kind == 5:
        return src.text(40) if src.int(0, 1) else ODD_STRINGS[src.int(0, len(ODD_STRINGS) - 1)]
    if kind in (6, 7):
        items = [build(src, budget, allow_deep) for _ in range(src.int(0, 6))]
        return items if kind == 6 else tuple(items)
    if kind == 8:
        return {key(src): build(src, budget, allow_deep) for _ in range(src.int(0, 6))}
    if kind == 9:
        odd_keys: list[Any] = [1, None, 1.5, ("t",), b"k", True, StrSub("s"), Flavor.SWEET]
        return {odd_keys[src.int(0, len(odd_keys) - 1)]: build(src, budget, allow_deep)}
    if kind == 10:
        return OTHER[src.int(0, len(OTHER) - 1)]()
    if kind == 11 and allow_deep:
        return deep(src)
    if kind == 12 and allow_deep:
        return cycle(src)
    if kind == 13:
        # Containers the `Mutating` type empties while they are read.
        victim: list[Any] = [build(src, budget, allow_deep) for _ in range(src.int(0, 3))] + [Mutating()]
        victim_dict = {"before": 1, "m": Mutating(), "after": 2}
        _VICTIMS[:] = [victim, victim_dict]
        return [victim, victim_dict]
    return {"role": "user", "content": build(src, budget, allow_deep)}


def key(src: Source) -> str:
    return src.text(12) if src.int(0, 2) else ODD_STRINGS[src.int(0, len(ODD_STRINGS) - 2)]


ENDPOINT = DataClient(base_url="http://127.0.0.1:9", project="p", api_key="ik_live_a1b2c3d4_x", max_retries=0).endpoint(
    "w"
)


def messages_of(src: Source, allow_deep: bool) -> Any:
    budget = [src.int(1, 200)]
    value = build(src, budget, allow_deep)
    where = src.int(0, 4)
    if where == 0:
        return [{"role": "user", "content": value}]
    if where == 1:
        return [{"role": "user", "content": "hi", key(src): value}]
    if where == 2:
        return [value]
    if where == 3:
        return [build(src, budget, allow_deep) for _ in range(src.int(1, 5))] + [value]
    return value


def describe(value: Any, limit: int = 300) -> str:
    """A bounded description (repr of a deep value would itself recurse too far)."""
    try:
        text = repr(value)
    except BaseException as err:  # a description must never fail
        text = f"<{type(value).__name__}; repr raised {type(err).__name__}>"
    return text if len(text) <= limit else text[:limit] + "..."


def one(src: Source, allow_deep: bool) -> None:
    messages = messages_of(src, allow_deep)
    call = ENDPOINT.generate_text if src.int(0, 1) else ENDPOINT.generate_text_stream
    try:
        result = call(messages=messages)
    except ALLOWED:
        return
    except Boom:
        return
    except BaseException as err:
        raise AssertionError(
            f"{call.__name__}(messages={describe(messages)}) raised {type(err).__name__}: {describe(err)}"
        ) from err
    finally:
        _VICTIMS.clear()
    # Nothing listens on 127.0.0.1:9, so a request can only fail; a result means the value never went out.
    raise AssertionError(f"{call.__name__} returned {describe(result)} for messages={describe(messages)}")


class LastInput:
    """The input about to run, in a file: what is left to replay when the process dies of a signal."""

    def __init__(self, argv: list[str]) -> None:
        prefix = next((a.split("=", 1)[1] for a in argv if a.startswith("-artifact_prefix=")), "./")
        self.path = prefix + "last-input"
        self.file = open(self.path, "wb")  # noqa: SIM115 - open for the whole run

    def record(self, data: bytes) -> None:
        self.file.seek(0)
        self.file.write(data)
        self.file.truncate()
        self.file.flush()


def run_random(argv: list[str], allow_deep: bool) -> None:
    seconds = 60.0
    seed = int(time.time())
    for arg in argv:
        if arg.startswith("-max_total_time="):
            seconds = float(arg.split("=", 1)[1])
        elif arg.startswith("--seed="):
            seed = int(arg.split("=", 1)[1])
    last = LastInput(argv)
    deadline = time.monotonic() + seconds
    runs = 0
    while time.monotonic() < deadline:
        case_seed = seed * 1_000_003 + runs
        last.record(f"--random --seed={seed} run {runs}\n".encode())
        try:
            one(RandomSource(random.Random(case_seed)), allow_deep)
        except AssertionError:
            print(f"failed at run {runs}; replay with --random --seed={seed} (case seed {case_seed})", flush=True)
            raise
        runs += 1
    print(f"stat::number_of_executed_units: {runs}")
    print(f"stat::average_exec_per_sec:     {int(runs / seconds)}")


def main() -> None:
    argv = sys.argv[1:]
    allow_deep = "--no-deep" not in argv
    argv = [arg for arg in argv if arg != "--no-deep"]
    faulthandler.enable()
    if "--random" in argv or atheris is None:
        if atheris is None:
            print("atheris is not installed: seeded random values instead of coverage-guided ones", flush=True)
        run_random([arg for arg in argv if arg != "--random"], allow_deep)
        return

    # Replaying saved inputs (files, not a corpus directory) must not overwrite them.
    positional = [arg for arg in argv if not arg.startswith("-")]
    replaying = bool(positional) and not any(os.path.isdir(arg) for arg in positional)
    last = None if replaying else LastInput(argv)

    def test_one_input(data: bytes) -> None:
        if last is not None:
            last.record(data)
        one(FuzzedSource(data), allow_deep)

    # Coverage of the harness's own choices steers libFuzzer towards new kinds and shapes of value.
    for function in (build, deep, cycle, messages_of, key):
        globals()[function.__name__] = atheris.instrument_func(function)
    atheris.Setup([sys.argv[0], *argv], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
