"""The dashboard's rendering rules without a server: Ansible output and commit text are always text."""

from __future__ import annotations

from gitopsd.web.pages import STATES, ansi_to_html, sse, templates


def test_ansible_colours_become_classes_after_the_text_is_escaped():
    html = ansi_to_html("\x1b[0;32mok: [web-1]\x1b[0m <script>alert(1)</script> \x1b[1;31mfailed\x1b[0m\n")
    assert '<span class="ansi-fg-green">ok: [web-1]</span>' in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert '<span class="ansi-bold ansi-fg-red">failed</span>' in html
    assert "\x1b" not in html


def test_escape_sequences_other_than_colours_and_control_bytes_are_dropped():
    assert ansi_to_html("a\x1b[2Kb\x1b[?25lc\x07d\x1b]0;title") == "abcd]0;title"


def test_a_commit_message_with_markup_renders_as_text_in_the_pipeline():
    page = (
        templates()
        .from_string('{% import "_macros.html" as m with context %}{{ m.commit(sha, subject) }}')
        .render(sha="a" * 40, subject='<img src=x onerror="alert(1)">', csrf="", STATES=STATES)
    )
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in page and "<img" not in page


def test_a_server_sent_event_puts_each_line_on_its_own_data_line():
    assert sse("output", "one\ntwo") == "event: output\ndata: one\ndata: two\n\n"


def test_every_state_status_can_name_has_a_symbol_and_a_word():
    from gitopsd.services.status import STATES as STATUS_STATES

    for state in [*STATUS_STATES.values(), "queued", "unavailable"]:
        symbol, word = STATES[state]
        assert symbol and word


def test_colour_codes_with_absurd_parameters_are_ignored_not_read():
    assert ansi_to_html("\x1b[" + "9" * 5000 + "ma\x1b[0m") == "a"
    assert ansi_to_html("\x1b[" + "0;" * 100_000 + "31mb\x1b[0m") == "b"  # past the sixteenth parameter
    assert ansi_to_html("\x1b[1;" + "9" * 4 + ";32mc") == '<span class="ansi-bold ansi-fg-green">c</span>'
