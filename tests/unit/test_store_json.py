"""The stores' JSON helpers behave exactly as the standard library's calls they stand in for."""

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twofold.store import _json

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(JSON)
def test_dumps_and_loads_agree_with_the_standard_library(value: Any) -> None:
    text = _json.dumps(value)
    assert text == json.dumps(value, separators=(",", ":"))
    assert _json.loads(text) == json.loads(text)


@pytest.mark.parametrize("text", [' {"a": 1}', '{"a": 1} ', "\n[1, 2]\n"])
def test_text_with_surrounding_whitespace_reads_as_json_loads_reads_it(text: str) -> None:
    assert _json.loads(text) == json.loads(text)


@pytest.mark.parametrize("text", ['{"a": 1} trailing', '{"a": 1}{"b": 2}', "", "{", "nope"])
def test_anything_that_is_not_one_json_value_raises_json_loads_error(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)
    with pytest.raises(json.JSONDecodeError):
        _json.loads(text)
