"""The documentation covers the real command line, and its links lead somewhere.

Every command of ``hazardseg`` (walked from the typer app, so a new command or option is seen
at once) must have exactly one section in ``docs/*.md``: a heading holding a code span
``hazardseg <command path> ...``. Every long option of the command must appear in that
section (the heading up to the next heading of the same or a higher level). README.md
lists every command in its command table with a link to that page, stays short, and every
relative link in README.md and docs/*.md points to an existing file and heading.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer

from hazardseg.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
README_MAX_LINES = 250

_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"`([^`]+)`")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HTML_ID = re.compile(r"""<a\s+(?:id|name)=["']([^"']+)["']""")


# --- the command line ------------------------------------------------------------------------


def command_tree(command: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    """Every command reachable from ``command`` (itself included), keyed by its path."""
    found = {path: command}
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        found.update(command_tree(sub, (*path, name)))
    return found


def long_options(command: Any) -> list[str]:
    """The long options (``--name``, including ``--no-name`` forms) a command declares."""
    names: list[str] = []
    for param in command.params:
        if getattr(param, "param_type_name", None) != "option":
            continue
        names += [o for o in [*param.opts, *param.secondary_opts] if o.startswith("--")]
    return names


def documented_commands(root: Any) -> dict[tuple[str, ...], list[str]]:
    """Commands that need a docs section, with their long options: every leaf command, and
    a group (the root included) only when it has options of its own."""
    out = {}
    for path, command in command_tree(root).items():
        options = long_options(command)
        if not hasattr(command, "commands") or options:
            out[path] = options
    return out


def cli_label(path: tuple[str, ...]) -> str:
    return " ".join(("hazardseg", *path))


# --- markdown --------------------------------------------------------------------------------


@dataclass
class Section:
    page: str
    level: int
    title: str
    body: str


def outside_code(text: str) -> list[str]:
    """The lines of a markdown text with fenced code blocks blanked out."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            lines.append("")
        else:
            lines.append("" if fenced else line)
    return lines


def sections(page: str, text: str) -> list[Section]:
    """Every heading of ``text`` with its body: the lines (code blocks included) up to the
    next heading of the same or a higher level."""
    raw = text.splitlines()
    heads = []
    for i, line in enumerate(outside_code(text)):
        match = _HEADING.match(line)
        if match:
            heads.append((i, len(match.group(1)), match.group(2)))
    out = []
    for k, (i, level, title) in enumerate(heads):
        end = next((j for j, lev, _ in heads[k + 1 :] if lev <= level), len(raw))
        out.append(Section(page, level, title, "\n".join(raw[i:end])))
    return out


def heading_names_command(title: str, path: tuple[str, ...], subcommands: set[str]) -> bool:
    """Whether a heading holds a code span ``hazardseg <path> [ARGS...]`` for this command
    (``hazardseg data synth OUT`` names ``data synth``, not the group ``data``)."""
    for span in _CODE_SPAN.findall(title):
        words = span.split()
        if words[: len(path) + 1] != ["hazardseg", *path]:
            continue
        rest = words[len(path) + 1 :]
        if not rest or (path and rest[0] not in subcommands) or (not path and rest[0][0] == "-"):
            return True
    return False


def has_option(text: str, option: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def docs_problems(root: Any, pages: dict[str, str]) -> list[str]:
    """What the docs miss for the CLI rooted at ``root``: commands without exactly one
    section, and long options absent from their command's section."""
    tree = command_tree(root)
    all_sections = [s for page, text in sorted(pages.items()) for s in sections(page, text)]
    problems = []
    for path, options in documented_commands(root).items():
        subs = set(getattr(tree[path], "commands", {}))
        found = [s for s in all_sections if heading_names_command(s.title, path, subs)]
        label = cli_label(path)
        if not found:
            problems.append(f"`{label}`: no heading in docs/*.md names it")
            continue
        if len(found) > 1:
            where = ", ".join(f"{s.page}: {s.title}" for s in found)
            problems.append(f"`{label}`: documented in several sections ({where})")
        missing = [o for o in options if not has_option(found[0].body, o)]
        if missing:
            problems.append(
                f"`{label}`: {', '.join(missing)} missing from {found[0].page}, "
                f"section {found[0].title!r}"
            )
    return problems


def github_slug(title: str) -> str:
    """The anchor GitHub gives a heading: rendered text, lower case, punctuation dropped,
    spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", title)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every anchor of a page, with GitHub's ``-1``, ``-2`` suffixes for repeated headings."""
    seen: dict[str, int] = {}
    found = set()
    for line in outside_code(text):
        found.update(_HTML_ID.findall(line))
        match = _HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def relative_links(text: str) -> list[str]:
    """Link targets of a page that are neither web addresses nor inside code."""
    targets = []
    for line in outside_code(text):
        line = _CODE_SPAN.sub("", line)
        ref = _REF_DEF.match(line)
        targets += [ref.group(1)] if ref else _LINK.findall(line)
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I)]


def broken_links(page: Path) -> list[str]:
    """Relative links of ``page`` whose file, or heading in a markdown file, does not exist."""
    problems = []
    for target in relative_links(page.read_text(encoding="utf-8")):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        name = f"{page.name}: ({target})"
        if not dest.exists():
            problems.append(f"{name}: {file_part} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text("utf-8")):
            problems.append(f"{name}: no heading #{anchor} in {dest.name}")
    return problems


def doc_pages() -> dict[str, str]:
    return {f"docs/{p.name}": p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md"))}


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


# --- tests -----------------------------------------------------------------------------------


def test_every_command_and_long_option_is_documented() -> None:
    problems = docs_problems(typer.main.get_command(app), doc_pages())
    assert not problems, "docs/*.md do not cover the CLI:\n" + "\n".join(problems)


def test_the_walk_sees_the_whole_cli() -> None:
    commands = documented_commands(typer.main.get_command(app))
    assert ("data", "synth") in commands and ("evaluate",) in commands
    assert "--fit-images" in commands[("evaluate",)]
    assert "--no-progress" in commands[("data", "check")]
    assert () in commands and "--debug" in commands[()]


def _fake_cli() -> Any:
    fake = typer.Typer(add_completion=False)
    data = typer.Typer()

    @data.command("synth")
    def synth(
        train: int = typer.Option(200, "--train"),
        made_up: int = typer.Option(0, "--made-up-option"),
    ) -> None:
        """A documented command with one option the docs do not know."""

    @fake.command("frobnicate")
    def frobnicate(level: int = typer.Option(1, "--level")) -> None:
        """A command no page documents."""

    fake.add_typer(data, name="data")
    return typer.main.get_command(fake)


def test_missing_command_and_made_up_option_are_reported() -> None:
    problems = docs_problems(_fake_cli(), doc_pages())
    text = "\n".join(problems)
    assert "`hazardseg frobnicate`: no heading" in text
    assert "--made-up-option missing from docs/synthetic.md" in text
    assert "--train" not in text
    assert len(problems) == 2


def test_an_option_counts_only_in_its_own_section() -> None:
    pages = {
        "docs/a.md": "# A\n## `hazardseg data synth OUT`\nno options here\n"
        "## `hazardseg models`\n`--train N` belongs to another section\n",
    }
    problems = docs_problems(_fake_cli(), pages)
    assert any("--train, --made-up-option missing from docs/a.md" in p for p in problems)


def test_a_command_documented_twice_is_reported() -> None:
    pages = {
        "docs/a.md": "## `hazardseg frobnicate`\n`--level`\n",
        "docs/b.md": "## Using `hazardseg frobnicate --level 2`\n",
    }
    problems = docs_problems(_fake_cli(), pages)
    assert any("frobnicate`: documented in several sections" in p for p in problems)


def test_heading_matching() -> None:
    assert heading_names_command("`hazardseg data synth OUT`: scenes", ("data", "synth"), set())
    assert not heading_names_command("`hazardseg data synth OUT`", ("data",), {"synth", "check"})
    assert not heading_names_command("`hazardseg evaluate`", ("eval-maps",), set())
    assert heading_names_command("Global options: `hazardseg --debug`", (), {"data"})
    assert not heading_names_command("`hazardseg data check`", (), {"data"})


def test_readme_command_table_links_each_command_to_its_page() -> None:
    root = typer.main.get_command(app)
    tree = command_tree(root)
    all_sections = [s for page, text in doc_pages().items() for s in sections(page, text)]
    rows = [line for line in README.read_text("utf-8").splitlines() if line.startswith("|")]
    problems = []
    for path in documented_commands(root):
        if not path:
            continue
        label = cli_label(path)
        mine = [r for r in rows if re.search(rf"`{re.escape(label)}(?=[`\s])", r)]
        subs = set(getattr(tree[path], "commands", {}))
        pages = {s.page for s in all_sections if heading_names_command(s.title, path, subs)}
        linked = {t.partition("#")[0] for r in mine for t in _LINK.findall(r)}
        if not mine:
            problems.append(f"`{label}` is not in README.md's command table")
        elif not pages & linked:
            problems.append(f"`{label}`: its row in README.md does not link to {sorted(pages)}")
    assert not problems, "\n".join(problems)


def test_readme_is_short() -> None:
    n = len(README.read_text("utf-8").splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES})"


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


def test_link_checker_reports_missing_files_and_anchors(tmp_path: Path) -> None:
    text = (
        "# Page\n## Two words\n[ok](other.md#a-heading) [ok](#two-words) [a](nope.md) "
        "[b](other.md#no-such-heading) [c](#also-missing) `[d](x.md)`\n"
        "```\n[e](y.md)\n```\n[f](https://example.org/z.md)\n"
    )
    assert relative_links(text) == [
        "other.md#a-heading",
        "#two-words",
        "nope.md",
        "other.md#no-such-heading",
        "#also-missing",
    ]
    (tmp_path / "other.md").write_text("# A heading\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(text, encoding="utf-8")
    problems = broken_links(page)
    assert len(problems) == 3, problems
    assert "nope.md does not exist" in problems[0]
    assert "no heading #no-such-heading in other.md" in problems[1]
    assert "no heading #also-missing in page.md" in problems[2]


def test_github_slugs() -> None:
    assert github_slug("`hazardseg data synth`: synthetic scenes") == (
        "hazardseg-data-synth-synthetic-scenes"
    )
    assert github_slug("Benchmark: TTA (`benchmarks/bench_feature_methods.py`)") == (
        "benchmark-tta-benchmarksbench_feature_methodspy"
    )
    assert github_slug("A — b, c [link](x.md)") == "a--b-c-link"
    assert anchors("# T\n## Run\n```\n## Run\n```\n## Run\n") == {"t", "run", "run-1"}


def test_quickstart_blocks_are_where_ci_reads_them() -> None:
    lines = README.read_text("utf-8").splitlines()
    for marker, words in (("quickstart:demo", "hazardseg demo"), ("quickstart:test", "pytest")):
        i = lines.index(f"<!-- {marker} -->")
        assert lines[i + 1].startswith("```"), marker
        assert words in lines[i + 2], marker
