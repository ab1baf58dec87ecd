"""The docs beside the README: the CLI and configuration references match the parser and the key sets, every link
lands, the README stays short.

Real: the command line's own parser (gitopsd.cli.main.build_parser, through tools/gen_cli_docs.py), the config
parsers' key sets (gitopsd.config.reference, through tools/gen_config_docs.py) and the Markdown files of this
checkout. Nothing faked.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from types import ModuleType

from tests.support import ROOT

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def generator(name: str = "gen_cli_docs") -> ModuleType:
    """tools/NAME.py as a module (tools/ is not a package: `make docs` runs it as a script)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file (code blocks skipped, repeats numbered)."""
    found: set[str] = set()
    fenced = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#+ ", line):
            slug = re.sub(r"[^\w\- ]", "", line.split(" ", 1)[1].strip().lower()).replace(" ", "-")
            n, name = 0, slug
            while name in found:
                n += 1
                name = f"{slug}-{n}"
            found.add(name)
    return found


def test_the_cli_reference_is_what_the_parser_prints_today():
    assert generator().render() == (DOCS / "cli.md").read_text(), "docs/cli.md is out of date: run `make docs`"


def test_the_configuration_reference_is_what_the_parsers_accept_today():
    rendered = generator("gen_config_docs").render()
    assert rendered == (DOCS / "configuration.md").read_text(), "docs/configuration.md is out of date: run `make docs`"


def test_the_api_pages_reason_ids_are_the_registrys_with_their_kind_status_and_meaning():
    page = (DOCS / "api.md").read_text()
    assert generator("gen_reason_docs").render(page) == page, "docs/api.md's reason ids are out of date: run `make docs`"


def test_every_key_set_beside_a_config_parser_is_in_the_reference_with_one_line_on_each_key():
    from gitopsd.config.reference import SECTIONS

    listed = {id(keys) for _, keys in SECTIONS}
    for path in sorted((ROOT / "gitopsd" / "config").glob("*.py")):
        module = importlib.import_module(f"gitopsd.config.{path.stem}" if path.stem != "__init__" else "gitopsd.config")
        for name, value in vars(module).items():
            if name.endswith("_KEYS"):
                assert isinstance(value, dict) and id(value) in listed, f"{path.name}: {name} is not in reference.SECTIONS"
                blank = [key for key, what in value.items() if not what.strip() or "\n" in what]
                assert not blank, f"{path.name}: {name}: keys without a one-line description: {blank}"


def test_every_link_between_the_readme_and_the_docs_reaches_a_file_and_a_heading_that_exist():
    broken = []
    for source in [ROOT / "README.md", ROOT / "DEVELOPMENT.md", *PAGES]:
        for target in LINK.findall(source.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not ours to check
            path, _, anchor = target.partition("#")
            file = (source.parent / path).resolve() if path else source
            if not file.exists():
                broken.append(f"{source.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{source.name}: {target} (no such heading)")
    assert broken == []


def test_the_readme_stays_short_and_links_every_docs_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    assert [p.name for p in PAGES if f"(docs/{p.name})" not in readme] == []
    assert "(DEVELOPMENT.md)" in readme


def test_every_docs_page_starts_with_a_title_and_a_one_paragraph_summary():
    for page in PAGES:
        title, blank, summary = page.read_text().split("\n", 3)[:3]
        assert title.startswith("# ") and blank == "" and summary and not summary.startswith(("#", "```", "|", "-")), page.name
