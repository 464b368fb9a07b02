"""Flat requests are filled into a skeleton rendered once: byte for byte what a full
render gives, the same refusals, for every operation the shipped mappings call."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.mapping.compiler import compile_system
from bridge.soap.envelope import EnvelopeTemplate, HeaderTemplate

ROOT = Path(__file__).resolve().parents[2]


def _templates() -> list[tuple[str, EnvelopeTemplate, HeaderTemplate | None]]:
    found: dict[str, tuple[str, EnvelopeTemplate, HeaderTemplate | None]] = {}
    for system_yaml in sorted(ROOT.glob("mappings/*/system.yaml")):
        system = compile_system(system_yaml.parent, {}, endpoint="http://legacy.test/")
        header = system.session.header if system.session is not None else None
        resources: Any = system.resources
        for resource in resources.values() if isinstance(resources, dict) else resources:
            for interaction in ("read", "search", "create"):
                call = getattr(getattr(resource, interaction, None), "call", None)
                if call is not None:
                    name = f"{system.name}.{call.template.operation.name}"
                    found[name] = (name, call.template, header)
    return sorted(found.values(), key=lambda t: t[0])


TEMPLATES = _templates()
# Markup, quotes and control characters often; any other character now and then.
TEXT = st.text(
    st.one_of(st.sampled_from("&<>\r\t\n\x00\"' ab"), st.characters(codec="utf-8")), max_size=12
)


def _outcome(render: Any) -> Any:
    try:
        return render()
    except Exception as exc:
        return (type(exc), str(exc))


def test_every_shipped_operation_is_covered() -> None:
    assert len(TEMPLATES) >= 10


@pytest.mark.parametrize(("name", "template", "header"), TEMPLATES, ids=[t[0] for t in TEMPLATES])
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_filled_skeleton_is_the_full_render(
    name: str, template: EnvelopeTemplate, header: HeaderTemplate | None, data: st.DataObject
) -> None:
    children = [c.name for c in template.operation.input.children]
    names = data.draw(st.lists(st.sampled_from(children), unique=True)) if children else []
    values = {n: data.draw(TEXT) for n in names}
    token = data.draw(st.one_of(st.none(), TEXT))
    extra = data.draw(st.sampled_from(["", "<w:Security xmlns:w='urn:w'>s</w:Security>"]))
    for _ in range(2):  # the first call makes the skeleton, the second fills it
        filled = _outcome(lambda: template.render(values, header, token, extra))
        full = _outcome(lambda: template._render(values, header, token, extra))
        assert filled == full


@pytest.mark.parametrize(("name", "template", "header"), TEMPLATES, ids=[t[0] for t in TEMPLATES])
@pytest.mark.parametrize("text", ["plain", "", "a&b", "a<b", "a>b", "a\rb", "tab\tthere", "\x01"])
def test_each_kind_of_text_in_every_element(
    name: str, template: EnvelopeTemplate, header: HeaderTemplate | None, text: str
) -> None:
    values = {c.name: text for c in template.operation.input.children}
    for _ in range(2):
        assert _outcome(lambda: template.render(values, header, text)) == _outcome(
            lambda: template._render(values, header, text, "")
        )
