"""systemd's word splitting (quotes, backslashes), as concurrentd reads list values given as text.
Pure: no systemd."""

import random
import shlex

import pytest

from concurrentd.systemd import _syntax
from concurrentd.systemd.properties import convert_properties

pytestmark = pytest.mark.pure   # needs neither root nor systemd (see conftest)


def _shell_words(s: str, keep_backslashes: bool) -> list[str]:
    lexer = shlex.shlex(s, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = ""
    if keep_backslashes:
        lexer.escape = ""
    return list(lexer)


@pytest.mark.parametrize("keep_backslashes", [False, True])
def test_words_are_split_as_posix_shell_words(keep_backslashes, monkeypatch):
    monkeypatch.setattr(_syntax, "cunescape", lambda word: word)   # compare before unescaping
    rng = random.Random(1)
    pieces = ["a", "b", " ", "  ", "'", '"', "\\", "x y", "\t", "\n", "é", "$", "#"]
    for _ in range(20000):
        s = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        try:
            expected = _shell_words(s, keep_backslashes)
        except ValueError:
            with pytest.raises(ValueError):
                _syntax.split_words(s, unescape=keep_backslashes)
            continue
        assert _syntax.split_words(s, unescape=keep_backslashes) == expected, repr(s)


def test_a_megabyte_list_value_converts():
    # (shlex's loop grows each word a character at a time: a minute for this)
    ((_, (_, value)),) = convert_properties({"Environment": "A=" + "x" * (1 << 20) + " B=2"})
    assert value == ["A=" + "x" * (1 << 20), "B=2"]
