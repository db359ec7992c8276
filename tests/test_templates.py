"""Templates that only substitute variables are rendered without a Jinja context, byte for byte as Jinja does."""

from __future__ import annotations

import jinja2
import pytest

from instructkit.templates import _compiled, _environment, plain_parts, render

VALUES = ["Répondez ✓\n  with {{ braces }} and {% tags %}", "", 3, 4.5, None, ["a", "é"], {"k": 1}]


def packaged() -> list[str]:
    return sorted(n for n in _environment().list_templates() if n.endswith(".jinja"))


def test_some_packaged_templates_take_the_plain_path():
    assert "alpagasus.jinja" in [n for n in packaged() if _compiled(n, None, 0)[1] is not None]


@pytest.mark.parametrize("name", packaged())
def test_packaged_templates_render_as_jinja_does(name):
    template, parts = _compiled(name, None, 0)
    names = set(parts[1::2]) if parts is not None else set()
    for value in VALUES:
        variables = {n: value for n in names}
        if parts is None or not variables:
            continue
        assert render(name, **variables) == template.render(**variables).strip()


def test_plain_parts_only_for_plain_substitution():
    env = _environment()
    assert plain_parts(env.parse("a {{ x }} b {{ y }}")) == ("a ", "x", " b ", "y", "")
    for source in ("{{ x | upper }}", "{% if x %}a{% endif %}", "{{ x.y }}", "{{ x + 1 }}", "{# c #}{{ f(x) }}"):
        assert plain_parts(env.parse(source)) is None, source


def test_a_user_template_is_checked_and_a_missing_variable_raises_jinjas_error(tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text("Rate {{ output }} for {{ instruction }}.\n")
    assert render("x", path=path, output="o", instruction="i") == "Rate o for i."
    with pytest.raises(jinja2.UndefinedError, match="'instruction' is undefined"):
        render("x", path=path, output="o")
