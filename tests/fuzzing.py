"""
Random and mutated inputs for the fuzz tests of every parser: bounded,
seeded (C{IMD_FUZZ_SEED}, or a fixed default, so CI is repeatable and a
failure names the seed to replay it) and fast.

Mutations start from a valid request body and then break one thing: a
field's value swapped for a hostile one (wrong type, lone surrogate,
Unicode digits, a number past any limit, deep nesting, a long string), a
field dropped or added, or the bytes themselves flipped, cut or padded.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any, Iterator

SEED = int(os.environ.get("IMD_FUZZ_SEED", "20261201"))
CASES = int(os.environ.get("IMD_FUZZ_CASES", "150"))

# JSON text, as a client can write it (not all of it is valid JSON).
HOSTILE = [
    "null", "true", "false", "0", "-1", "1.5", "-0.0", "1e308", "1e400", "Infinity", "NaN",
    "18446744073709551616", "9" * 5000, '""', '" "', '"²"', '"٣"', '"１"', '"\\ud800"', '"x\\udfff"',
    '"\\u0000"', '"-1"', '"0001-01-01"', '"9999-99-99 99:99:99"', '"' + "9" * 40 + '"', "[]", "{}",
    "[null]", '{"a": {}}', "[" * 200 + "]" * 200, "[" * 2000 + "]" * 2000, '"' + "x" * 20000 + '"',
    '"a b"', '"../../etc/passwd"', '"<x/>"', '"\\"\\\\"', '"' + "字" * 300 + '"',
]
_MARK = "\u0001IMD-FUZZ\u0001"


def rng(salt: str) -> random.Random:
    return random.Random(f"{SEED}:{salt}")


def render(obj: dict[str, Any], key: str | None = None, value: str | None = None) -> bytes:
    """C{obj} as JSON text, with C{key}'s value written as the raw text C{value}."""
    if key is None:
        return json.dumps(obj, ensure_ascii=False).encode("utf-8")
    text = json.dumps(dict(obj, **{key: _MARK}), ensure_ascii=False)
    return text.replace(json.dumps(_MARK, ensure_ascii=False), value, 1).encode("utf-8", "surrogatepass")


def mutate(r: random.Random, obj: dict[str, Any]) -> bytes:
    keys = list(obj) or ["x"]
    choice = r.random()
    if choice < 0.55:
        return render(obj, r.choice(keys), r.choice(HOSTILE))
    if choice < 0.65:
        return render({k: v for k, v in obj.items() if k != r.choice(keys)})
    if choice < 0.72:
        return render(obj, r.choice(["x", "", "__proto__", "a" * 300]), r.choice(HOSTILE))
    raw = bytearray(render(obj))
    if choice < 0.82 and raw:
        for _ in range(r.randint(1, 4)):
            raw[r.randrange(len(raw))] = r.randrange(256)
    elif choice < 0.88:
        raw = raw[: r.randrange(len(raw) + 1)]
    elif choice < 0.94:
        at = r.randrange(len(raw) + 1)
        raw[at:at] = r.randbytes(r.randint(1, 40))
    else:
        raw = bytearray(r.randbytes(r.randint(0, 300)))
    return bytes(raw)


def cases(salt: str, seeds: list[tuple[Any, dict[str, Any]]], n: int = CASES) -> Iterator[tuple[Any, bytes]]:
    """C{n} (label, mutated body) pairs drawn from C{seeds}, (label, valid body) pairs."""
    r = rng(salt)
    for _ in range(n):
        label, obj = r.choice(seeds)
        yield label, mutate(r, obj)


def where(salt: str) -> str:
    """What to say in a failure, to replay it."""
    return f"IMD_FUZZ_SEED={SEED} ({salt})"


def internal_errors(server: Any) -> float:
    """How many internal errors C{server} answered, on any channel or API."""
    total = 0.0
    for metric in server.metrics.errors.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels.get("code") == "internal_error":
                total += sample.value
    return total
