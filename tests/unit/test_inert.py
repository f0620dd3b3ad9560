"""The one sanitizer for outside text: nothing a terminal acts on survives it."""
from profiler.inert import inert, is_inert


def test_plain_text_is_unchanged():
    assert inert("payments/api-0") == "payments/api-0"
    assert inert("café ☕ 東京") == "café ☕ 東京"
    assert is_inert("netns:4026532281")


def test_escape_sequences_become_visible_escapes():
    hostile = "pod\x1b[2J\x1b]52;c;ZXZpbA==\x07\x1b]0;title\x07"
    out = inert(hostile)
    assert "\x1b" not in out and "\x07" not in out
    assert out.startswith("pod\\x1b[2J\\x1b]52;c;")


def test_c1_controls_and_bidi_overrides_are_escaped():
    assert inert("a\x9bb") == "a\\x9bb"            # CSI as one C1 byte
    assert inert("evil\u202egnp.exe") == "evil\\u202egnp.exe"
    assert inert("zero\u200bwidth") == "zero\\u200bwidth"
    assert inert("line\u2028sep") == "line\\u2028sep"


def test_line_breaks_only_where_asked():
    assert inert("a\nb\r\n") == "a\\x0ab\\x0d\\x0a"
    assert inert("a\nb", multiline=True) == "a\nb"
    assert inert("a\r\nb", multiline=True) == "a\\x0d\nb"
    assert inert("a\tb") == "a b"


def test_length_cap_and_non_strings():
    assert inert("x" * 10, max_len=5) == "xxxx…"
    assert inert(42) == "42"
    assert inert(None) == "None"


def test_a_document_is_made_inert_everywhere_keys_included():
    from profiler.inert import inert_tree

    doc = {"pods": [{"pod": "a\x1b[2Jb", "netns": 7, "drops": {"R\x1b]0;t\x07": 3}}],
           "node": {"hostname": "h\x9b1m"}, "ok": True, "none": None, "ratio": 0.5,
           "findings": [{"summary": "one\nline", "fixes": [{"rationale": "two\nlines\x1b[31m",
                                                           "snippet": "a: 1\nb: 2\n", "commands": ["x\ny"]}]}]}
    out = inert_tree(doc)
    assert out["pods"][0] == {"pod": "a\\x1b[2Jb", "netns": 7, "drops": {"R\\x1b]0;t\\x07": 3}}
    assert out["node"]["hostname"] == "h\\x9b1m"
    assert (out["ok"], out["none"], out["ratio"]) == (True, None, 0.5)
    finding = out["findings"][0]
    assert finding["summary"] == "one\\x0aline"
    assert finding["fixes"][0] == {"rationale": "two\nlines\\x1b[31m", "snippet": "a: 1\nb: 2\n",
                                   "commands": ["x\\x0ay"]}
    assert doc["pods"][0]["pod"] == "a\x1b[2Jb", "the input is left as it was"
    assert list(out) == list(doc), "order kept"


def test_a_plain_document_comes_back_equal():
    from profiler.inert import inert_tree

    doc = {"pods": [{"pod": "shop/web-0", "listen": [{"address": "::", "port": 80}]}], "t": (1, "x")}
    assert inert_tree(doc) == {"pods": [{"pod": "shop/web-0", "listen": [{"address": "::", "port": 80}]}],
                               "t": [1, "x"]}


def test_deep_nesting_does_not_recurse():
    from profiler.inert import inert_tree

    deep: list = ["\x1b"]
    for _ in range(100_000):
        deep = [deep]
    out = inert_tree(deep)
    for _ in range(100_000):
        out = out[0]
    assert out == ["\\x1b"]
