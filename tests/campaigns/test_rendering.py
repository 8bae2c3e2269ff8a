"""Liquid personalisation: the sandboxed context, limits, escaping, checks on save, text from HTML."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from campaigns.rendering import (
    MAX_LOOP_ITERATIONS,
    RenderError,
    check_template,
    contact_context,
    html_to_text,
    message_context,
    render,
    render_text_from_html,
)
from contacts.models import Contact
from tenants.models import Tenant


def context(**contact):
    tenant = Tenant(name="Shop & Co", postal_address="1 Main St")
    base = {"first_name": "", "attributes": {}}
    return message_context(
        contact={**base, **contact}, tenant=tenant, campaign_name="Spring",
        links={"unsubscribe": "https://u.example/x"}, cta={"label": "Buy now", "url": "https://s.example/p"},
    )  # fmt: skip


def test_the_marketers_idioms_render():
    source = (
        'Hi {{ contact.first_name | default: "there" }}! '
        "{% if contact.order_count > 1 %}Welcome back.{% else %}Welcome.{% endif %} "
        "{% for tag in contact.interests limit: 2 %}#{{ tag }} {% endfor %}"
        "{{ contact.attributes.plan | upcase }} — {{ cta.label }}: {{ cta.url }}"
    )
    assert render(
        source, context(first_name="Ann", order_count=3, interests=["run", "yoga", "ski"], attributes={"plan": "pro"})
    ) == ("Hi Ann! Welcome back. #run #yoga PRO — Buy now: https://s.example/p")
    assert render(source, context(interests=[])).startswith("Hi there! Welcome.")


def test_html_is_escaped_by_default_and_text_is_not():
    ctx = context(first_name='<img src=x onerror="alert(1)">')
    assert render("<p>{{ contact.first_name }}</p>", ctx, html_output=True) == (
        "<p>&lt;img src=x onerror=&#34;alert(1)&#34;&gt;</p>"
    )
    assert render("{{ contact.first_name }}", ctx) == '<img src=x onerror="alert(1)">'
    assert render("{{ tenant.name }}", context(), html_output=True) == "Shop &amp; Co"


def test_the_context_is_plain_data_only():
    contact = Contact(first_name="Ann", last_name="Lee", country="DE", total_revenue=Decimal("12.50"),
                      last_order_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC), attributes={"plan": "pro"})  # fmt: skip
    data = contact_context(contact)
    assert data["full_name"] == "Ann Lee" and data["country"] == "DE" and data["total_revenue"] == 12.5
    assert data["last_order_at"] == "2026-01-02T00:00:00+00:00"

    def plain(value):
        return (
            value is None
            or isinstance(value, str | int | float | bool)
            or (
                isinstance(value, list | dict)
                and all(plain(v) for v in (value.values() if isinstance(value, dict) else value))
            )
        )

    assert plain(data)
    # Nothing reaches the model or Python objects through the template.
    assert render("{{ contact.save }}{{ contact.__class__ }}{{ contact.tenant.slug }}", {"contact": data}) == ""


def test_loops_and_output_are_capped():
    with pytest.raises(RenderError, match="loop iteration limit"):
        render(f"{{% for i in (1..{MAX_LOOP_ITERATIONS + 1}) %}}x{{% endfor %}}", {})
    with pytest.raises(RenderError, match="output stream limit"):
        render("{% for i in (1..900) %}" + "x" * 1000 + "{% endfor %}", {})


def test_checks_on_save_point_at_the_line():
    assert check_template("Hello\n{% if contact.first_name %}\nno end").errors == [
        "At the end (line 3): expected tag endif, found end of expression"
    ]
    assert check_template("a\n\n{% bogus %}").errors == ["Line 3: unexpected tag 'bogus'"]
    assert check_template("{{ contact.first_name | shout }}").errors == ["Unknown filter: shout."]
    assert check_template("x" * 200_001).errors == ["At most 200,000 characters."]


def test_unknown_variables_are_warned_not_refused():
    check = check_template(
        "{{ contact.frist_name }} {{ contact.attributes.plan }} {{ contact.attributes.tier }} {{ links.unsubscribe }} "
        "{{ contact.interests.first }} {{ order.total }}",
        attribute_keys=["plan"],
    )
    assert check.ok
    assert check.warnings == [
        "Unknown custom attribute: {{ contact.attributes.tier }} renders empty.",
        "Unknown variable: {{ contact.frist_name }} renders empty.",
        "Unknown variable: {{ order.total }} renders empty.",
    ]


def test_text_part_from_html():
    markup = (
        "<html><head><title>t</title><style>p {color: red}</style></head><body>"
        "<h1>Spring sale</h1><p>Up to <b>50%</b> off.&nbsp;<a href='https://s.example/p'>Shop now</a></p>"
        "<ul><li>Shoes</li><li>Bags</li></ul><p><a href='mailto:x@y.example'>Write to us</a></p></body></html>"
    )
    assert html_to_text(markup) == (
        "Spring sale\n\nUp to 50% off. Shop now (https://s.example/p)\n\n- Shoes\n- Bags\n\nWrite to us"
    )


@pytest.mark.parametrize(
    "source",
    [
        "<p>Hi {{ contact.first_name | default: 'there' }}</p>"
        '<p><a href="{{ cta.url }}">{{ cta.label }}</a></p>'
        "{% if contact.order_count > 1 %}<p>Welcome back</p>{% else %}<p>Welcome</p>{% endif %}"
        "<ul>{% for tag in contact.interests %}<li>{{ tag | upcase }}</li>{% endfor %}</ul>",
        # Liquid where the HTML parser would break it: converted per message instead.
        "<p>{% if contact.order_count<3 %}few{% endif %}</p><img src='{{ contact.id }}'>",
        "<title>{% if contact.first_name %}</title><p>x</p>{% endif %}",
        "<p>Static &amp; plain</p>",
    ],
)
def test_text_from_an_html_template_matches_text_from_the_rendered_html(source):
    ctx = context(first_name='Ann <"A">', order_count=2, interests=["run", "ski"])
    rendered = render(source, ctx, html_output=True)
    assert render_text_from_html(source, ctx, rendered) == html_to_text(rendered)


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("Hello\n{% include 'footer' %}", "Line 2: unexpected tag 'include'"),
        ("{% render 'footer' %}", "Line 1: unexpected tag 'render'"),
        ("{{ contact.first_name | safe }}", "Unknown filter: safe."),
    ],
)
def test_partials_and_the_safe_filter_are_refused_on_save(source: str, error: str):
    assert check_template(source, html_output=True).errors == [error]


def test_contact_data_cannot_be_marked_as_html():
    with pytest.raises(RenderError):
        render("{{ contact.first_name | safe }}", {"contact": {"first_name": "<a href='x'>"}}, html_output=True)


def test_renders_are_memoised_on_the_values_a_template_reads_and_only_on_them():
    from campaigns import rendering

    source = "Hi {{ contact.first_name | default: 'there' }}{% if contact.attributes.vip %}, VIP{% endif %}!"
    before = len(rendering._memo.entries)
    ada = {"contact": {"first_name": "Ada", "email": "ada@example.com", "attributes": {"vip": True}}}
    ada_again = {"contact": {"first_name": "Ada", "email": "other@example.com", "attributes": {"vip": True}}}
    plain = {"contact": {"first_name": "Ada", "attributes": {"vip": "true"}}}  # text, not the boolean
    nobody = {"contact": {"attributes": {}}}
    assert render(source, ada) == render(source, ada_again) == "Hi Ada, VIP!"
    assert len(rendering._memo.entries) == before + 1  # the email is not read: one entry
    assert render(source, plain) == "Hi Ada, VIP!" and len(rendering._memo.entries) == before + 2
    assert render(source, nobody) == "Hi there!"
    loop = "{% for tag in contact.interests limit: 2 %}{{ tag | upcase }} {% endfor %}"
    assert render(loop, {"contact": {"interests": ["golf", "tea", "art"]}}) == "GOLF TEA "
    assert render(loop, {"contact": {"interests": ["art"]}}) == "ART "


def test_templates_that_read_computed_keys_or_the_clock_are_not_memoised():
    from campaigns import rendering

    computed = "{% assign k = contact.pick %}{{ contact.attributes[k] }}"
    assert rendering._read_paths(computed, False) is None
    assert render(computed, {"contact": {"pick": "a", "attributes": {"a": 1, "b": 2}}}) == "1"
    assert render(computed, {"contact": {"pick": "b", "attributes": {"a": 1, "b": 2}}}) == "2"
    assert rendering._read_paths("{{ 'now' | date: '%Y' }}", False) is None


def test_templates_reading_a_value_unique_to_each_contact_are_not_memoised():
    from campaigns import rendering

    assert rendering._read_paths("<a href='{{ links.unsubscribe }}'>x</a>", True) is None
    assert rendering._read_paths("?c={{ contact.id }}", False) is None
    assert rendering._read_paths("{{ contact.first_name }}", False) == (("contact", "first_name"),)
