"""What the owner accepts from a worker (concurrentd._results, csrc/pickle_check.c), on bytes an
attacker in a worker would send. Pure: no systemd, no unit; each payload is what a worker could
write as a result frame."""

from __future__ import annotations

import collections
import datetime
import decimal
import fractions
import ipaddress
import os
import pathlib
import pickle
import random
import struct
import time
import uuid

import pytest

from concurrentd._results import (
    MAX_COLLIDABLE_KEYS,
    RemoteBaseException,
    ResultPolicy,
    ResultRefused,
    encode_exception,
)

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)

POLICY = ResultPolicy()
P61 = (1 << 61) - 1


# -- pickle building blocks, as an attacker writes them ----------------------------------------------

def _s(x: str) -> bytes:
    b = x.encode()
    if len(b) > 255:
        return b"X" + struct.pack("<I", len(b)) + b
    return b"\x8c" + bytes([len(b)]) + b


def _g(module: str, name: str) -> bytes:
    return _s(module) + _s(name) + b"\x93"


def _i(n: int) -> bytes:
    b = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    if len(b) > 255:
        return b"\x8b" + struct.pack("<I", len(b)) + b
    return b"\x8a" + bytes([len(b)]) + b


def _reduce(module: str, name: str, args: bytes) -> bytes:
    return b"\x80\x05" + _g(module, name) + args + b"R."


class Secret:
    REQUIRE_REVIEW = True
    known: set = set()

    def __init__(self, text=""):
        self.text = text

    @classmethod
    def add(cls, item):   # what ADDITEMS calls on its target
        cls.known.add(item)


# -- allowed values round-trip ---------------------------------------------------------------------

VALUES = [None, True, 1, -1, 2 ** 70, 1.5, "s", b"b", bytearray(b"ba"), [1, [2]], (3,), {4: 5},
          {6}, frozenset({7}), complex(1, 2), range(1, 9, 2), slice(1, 2, 3),
          datetime.datetime(2026, 11, 29, 23, 59, tzinfo=datetime.timezone.utc),
          datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=2), "X")),
          datetime.date(2026, 11, 29), datetime.time(1, 2), datetime.timedelta(days=1, seconds=2),
          decimal.Decimal("1.5"), fractions.Fraction(1, 3), uuid.UUID(int=7),
          collections.OrderedDict(a=1), collections.Counter("aab"),
          pathlib.PurePosixPath("/a/b"),
          pathlib.Path("/c"), ipaddress.ip_address("10.0.0.1"), ipaddress.ip_network("::/64"),
          ipaddress.ip_interface("10.0.0.1/8")]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_allowed_values_round_trip(value):
    back = POLICY.loads(pickle.dumps(value, 5))
    assert back == value and type(back) is type(value)


def test_shared_and_recursive_structures_round_trip():
    x = [1]
    r: list = []
    r.append(r)
    back = POLICY.loads(pickle.dumps([x, x, r], 5))
    assert back[0] is back[1] and back[2][0] is back[2]


def test_every_pickle_of_plain_data_passes_the_check():
    rng = random.Random(1)

    def value(depth=0):
        c = rng.random()
        if depth > 4 or c < 0.3:
            return rng.choice([None, True, 7, -5, 2 ** rng.randint(0, 200), 1.5,
                               "x" * rng.randint(0, 300), b"y" * rng.randint(0, 300)])
        if c < 0.5:
            return [value(depth + 1) for _ in range(rng.randint(0, 5))]
        if c < 0.65:
            return tuple(value(depth + 1) for _ in range(rng.randint(0, 5)))
        if c < 0.8:
            return {rng.choice([1, "k", 2 ** 70, (1, 2)]): value(depth + 1) for _ in range(3)}
        return frozenset(rng.randint(0, 9) for _ in range(3))

    for _ in range(3000):
        v = value()
        for obj in (v, [v, v, (v,)]):
            assert POLICY.loads(pickle.dumps(obj, 5)) == obj


def test_a_deque_is_a_named_type():
    # a deque fills itself with APPENDS, and nests: only where the user names it
    value = collections.deque([1, [2]], maxlen=3)
    with pytest.raises(ResultRefused, match=r"result_types=\[deque\]"):
        POLICY.loads(pickle.dumps(value, 5))
    assert ResultPolicy([collections.deque]).loads(pickle.dumps(value, 5)) == value


def test_named_types_round_trip_and_others_name_the_fix():
    blob = pickle.dumps(Secret("x"), 5)
    with pytest.raises(ResultRefused, match=r"result_types=\[Secret\]"):
        POLICY.loads(blob)
    assert ResultPolicy([Secret]).loads(blob).text == "x"
    assert ResultPolicy(trust=True).loads(blob).text == "x"


# -- code in the owner -----------------------------------------------------------------------------

class _RunsInOwner:
    def __reduce__(self):
        return os.system, ("true",)


@pytest.mark.parametrize("payload", [
    pickle.dumps(_RunsInOwner(), 5),
    pickle.dumps([1, {"a": _RunsInOwner()}], 5),
    _reduce("builtins", "eval", _s("1") + b"\x85"),
    _reduce("builtins", "getattr", _g("os", "system") + _s("x") + b"\x86"),
    _reduce("subprocess", "Popen", _s("true") + b"\x85"),
    pickle.dumps([1], 0),   # protocol 0's GLOBAL/INST/PUT opcodes
], ids=["reduce", "nested", "eval", "getattr", "popen", "protocol-0"])
def test_no_result_runs_code_in_the_owner(payload):
    with pytest.raises(ResultRefused):
        POLICY.loads(payload)


def test_a_build_on_a_named_class_never_changes_it():
    # GLOBAL Secret; BUILD (None, {"REQUIRE_REVIEW": False}): setattr on the class itself
    slots = b"}(" + _s("REQUIRE_REVIEW") + b"\x89u"
    blob = b"\x80\x05" + _g(__name__, "Secret") + b"N" + slots + b"\x86b0N."
    with pytest.raises(ResultRefused, match="BUILD"):
        ResultPolicy([Secret]).loads(blob)
    # the same through the memo
    blob = b"\x80\x05" + _g(__name__, "Secret") + b"\x940h\x00N" + slots + b"\x86b0N."
    with pytest.raises(ResultRefused, match="BUILD"):
        ResultPolicy([Secret]).loads(blob)
    assert Secret.REQUIRE_REVIEW is True


def test_items_are_never_added_to_a_class():
    blob = b"\x80\x05" + _g(__name__, "Secret") + b"(" + _s("admin") + b"\x900N."
    with pytest.raises(ResultRefused, match="added to a class"):
        ResultPolicy([Secret]).loads(blob)
    assert Secret.known == set()


@pytest.mark.parametrize("payload", [
    # PosixPath('/srv/data/report.txt'), whose state then says /etc/shadow
    b"\x80\x05" + _g(pathlib.PosixPath.__module__, "PosixPath") + _s("/srv/data/report.txt")
    + b"\x85R"
    + b"N}" + _s("_str") + _s("/etc/shadow") + b"s\x86b.",
    # Fraction(1, 3), whose state then holds a 4-million-bit numerator
    b"\x80\x05" + _g("fractions", "Fraction") + b"K\x01K\x03\x86R"
    + b"N}" + _s("_numerator") + _i((1 << 4_000_000) + 1) + b"s\x86b.",
], ids=["path", "fraction"])
def test_a_stdlib_value_never_gets_state_its_constructor_did_not_check(payload):
    with pytest.raises(ResultRefused, match="BUILD"):
        POLICY.loads(payload)


# -- the owner's memory and time -------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    _reduce("builtins", "bytearray", _i(4 << 30) + b"\x85"),
    _reduce("collections", "deque", _g("builtins", "range") + _i(1 << 62) + b"\x85R" + b"K\x00\x86"),
    _reduce("collections", "Counter", _g("builtins", "range") + _i(10 ** 8) + b"\x85R\x85"),
    _reduce("fractions", "Fraction", _s("1e30000000") + b"\x85"),
    _reduce("fractions", "Fraction", _i(1 << (1 << 20)) + b"K\x03\x86"),
    _reduce("decimal", "Decimal", _s("9" * 100_000) + b"\x85"),
    b"\x80\x05N" + b"r" + struct.pack("<I", 1 << 29) + b".",   # LONG_BINPUT: a memo of 8 GiB
    b"\x80\x05\x8f(" + b"".join(_i(k * P61) for k in range(1, MAX_COLLIDABLE_KEYS + 10)) + b"\x90.",
    b"\x80\x05}(" + b"".join(_i(k * P61) + b"N" for k in range(1, MAX_COLLIDABLE_KEYS + 10)) + b"u.",
    b"\x80\x05\x8f(" + b"".join(_i(k * P61) + b"\x85" for k in range(1, MAX_COLLIDABLE_KEYS + 10))
    + b"\x90.",
    # tuples of small ints, floats, Decimals: hashes a worker can solve for, as keys
    b"\x80\x05\x8f(" + b"".join(b"K\x01K" + bytes([k % 256]) + b"\x86"
                                 for k in range(MAX_COLLIDABLE_KEYS + 10)) + b"\x90.",
    b"\x80\x05}(" + b"".join(b"G" + struct.pack(">d", k) + b"N"
                             for k in range(MAX_COLLIDABLE_KEYS + 10)) + b"u.",
    b"\x80\x05\x8f(" + b"".join(_g("decimal", "Decimal") + _s(str(k)) + b"\x85R"
                                 for k in range(MAX_COLLIDABLE_KEYS + 10)) + b"\x90.",
    # a key nested 300,000 tuples deep: hashing it overflows the C stack
    b"\x80\x05})" + b"\x85" * 300_000 + b"Ns.",
    # Fraction(N, 1) again and again on one memoized 65,536-bit N: 8 KiB each
    b"\x80\x05" + _i(1 << 65535) + b"\x94(" + b"".join(
        _g("fractions", "Fraction") + b"h\x00K\x01\x86R" for _ in range(5000)) + b"l.",
    # a list inserted into itself (L[0:0] = L) forty times: 2**40 items from 1 kB
    b"\x80\x05]\x94Na" + (_g("builtins", "slice") + b"K\x00K\x00\x86R" + b"h\x00s") * 40 + b".",
    # slices nested 200,000 deep: freeing them recursed in C without a limit
    b"\x80\x05" + _g("builtins", "slice") + b"\x940" + b"h\x00" * 200_000 + b"N"
    + b"\x85R" * 200_000 + b".",
    # a UUID whose state holds a deeply nested value (its hash recurses into it)
    b"\x80\x05" + _g("uuid", "UUID") + b")\x81N}" + _s("int") + b")" + b"\x85" * 900
    + b"s\x86b.",
], ids=["bytearray-size", "deque-range", "counter-range", "fraction-exponent", "fraction-bits",
        "decimal-digits", "memo-index", "hash-flood-set", "hash-flood-dict", "hash-flood-tuples",
        "tuple-keys", "float-keys", "decimal-keys", "deep-tuple", "fraction-copies",
        "list-doubling", "nested-slices", "uuid-state"])
def test_small_payloads_cannot_cost_the_owner_unbounded_memory_or_time(payload):
    t0 = time.process_time()
    with pytest.raises(ResultRefused):
        POLICY.loads(payload)
    assert time.process_time() - t0 < 1.0


def test_repeated_copies_of_one_memoized_object_are_bounded():
    # Counter(d) a thousand times on one memoized dict of 10,000 items: a copy per call
    d = b"}\x94(" + b"".join(b"K" + bytes([i % 256]) + b"K\x01" for i in range(200)) + b"u"
    calls = b"".join(_g("collections", "Counter") + b"h\x00\x85R0" for _ in range(1000))
    blob = b"\x80\x05" + d + b"0(" + calls + b"1N."
    with pytest.raises(ResultRefused, match="more than its own size"):
        POLICY.loads(blob)


# -- exceptions ------------------------------------------------------------------------------------

def _raised(exc: BaseException) -> bytes:
    try:
        raise exc
    except BaseException as e:   # noqa: BLE001
        return encode_exception(e)


def test_exceptions_are_rebuilt_with_the_workers_traceback():
    exc = POLICY.rebuild_exception(_raised(OSError(2, "No such file", "/x")))
    assert type(exc) is FileNotFoundError and exc.errno == 2 and exc.filename == "/x"
    assert "Traceback (most recent call last)" in str(exc.__cause__)


def test_a_base_exception_cannot_end_the_owner():
    exc = POLICY.rebuild_exception(_raised(SystemExit(7)))
    assert isinstance(exc, RemoteBaseException) and exc.exception.code == 7
    assert isinstance(POLICY.rebuild_exception(_raised(KeyboardInterrupt())), Exception)
    assert type(ResultPolicy(trust=True).rebuild_exception(_raised(SystemExit(7)))) is SystemExit


def test_an_exception_of_a_class_the_owner_has_not_loaded_is_not_imported():
    record = pickle.dumps(("antigravity_not_loaded", "Boom", None, b"", "tb", "text"), 5)
    exc = POLICY.rebuild_exception(record)
    assert isinstance(exc, ResultRefused) and "has not loaded" in str(exc)
    assert "antigravity_not_loaded" not in __import__("sys").modules


def test_an_exception_class_is_looked_up_without_running_code():
    import sys

    was_loaded = "concurrent.futures.thread" in sys.modules
    # concurrent.futures' module __getattr__ would import its thread module for this name
    record = pickle.dumps(("concurrent.futures", "ThreadPoolExecutor.Nope", None, b"", "tb",
                           "text"), 5)
    assert isinstance(POLICY.rebuild_exception(record), ResultRefused)
    assert ("concurrent.futures.thread" in sys.modules) == was_loaded


def test_an_exception_record_naming_a_function_is_refused():
    record = pickle.dumps(("os", "system", pickle.dumps(("true",)), b"", "tb", "text"), 5)
    assert isinstance(POLICY.rebuild_exception(record), ResultRefused)
