"""The lenient JSON reader accepts what the Java adapter's org.json accepted, and says where
the rest is wrong."""

from __future__ import annotations

from typing import Any

import pytest

from adapter.lenient_json import LenientJsonError, loads, loads_leading


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[{"a": 1}]', [{"a": 1}]),  # strict JSON stays JSON
        (
            '[{"name":"STORESCP","host":0.0.0.0,"port":2576},]',
            [{"name": "STORESCP", "host": "0.0.0.0", "port": 2576}],
        ),
        ('{"a": 1,}', {"a": 1}),
        ("{'a': 'x\\'y'}", {"a": "x'y"}),
        ("{a: b; c: d}", {"a": "b", "c": "d"}),
        ("{name: STORE SCP , host : localhost}", {"name": "STORE SCP", "host": "localhost"}),
        ("[1,,2]", [1, None, 2]),
        ("[,]", [None]),
        ("[]", []),
        ("[ TRUE, False, nULL ]", [True, False, None]),
        ("[007, -1.5e3, 1.2.3, -, 12]", ["007", -1500.0, "1.2.3", "-", 12]),
        ('["\\u00e9\\n\\/"]', ["\u00e9\n/"]),
        ("\ufeff\n\t [1]\n", [1]),
        ("[1 2]", ["1 2"]),  # one unquoted run, as org.json reads it
    ],
)
def test_accepts_what_org_json_accepts(text: str, expected: Any) -> None:
    assert loads(text) == expected


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("[1", (1, 3), "expected ',' or ']'"),
        ('{"a": 1, "a": 2}', (1, 10), "duplicate key 'a'"),
        ('[\n  "abc\n]', (2, 3), "unterminated string"),
        ("// comment\n[1]", (1, 1), "missing value"),
        ('["\\x"]', (1, 3), "illegal escape \\x"),
        ('["\\u12"]', (1, 3), "\\u needs 4 hex digits"),
        ("", (1, 1), "no value"),
        ('{"a": }', (1, 7), "missing value (found '}')"),
        ("{a 1}", (1, 5), "expected ':' after the key 'a 1'"),
        ('{"a": 1 "b": 2}', (1, 9), "expected ',' or '}', found '\"'"),
        ("[1]]", (1, 4), "unexpected text after the value"),
        ('[{"filter": Modality=MG}]', (1, 21), "expected ',' or '}', found '='"),
        ('[{"url": https://h/x}]', (1, 15), "expected ',' or '}', found ':'"),  # quote URLs
    ],
)
def test_refuses_with_line_and_column(text: str, where: tuple[int, int], what: str) -> None:
    with pytest.raises(LenientJsonError) as caught:
        loads(text)
    assert (caught.value.line, caught.value.column) == where, str(caught.value)
    assert what in str(caught.value)
    assert str(caught.value).startswith(f"line {where[0]}, column {where[1]}: ")


def test_loads_leading_returns_what_org_json_ignored() -> None:
    assert loads_leading('[1] and "more"') == ([1], 'and "more"')
    assert loads_leading("[1]  \n") == ([1], "")
