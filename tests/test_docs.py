"""The documentation keeps up with the code: every command, option and JSON schema is documented, every link lands.

What is measured is the package itself (the click app Typer builds, the schema strings in the source) against the
Markdown files; nothing here restates ckptcheck's output. New commands and schemas (added by any branch) are picked
up by walking the app and scanning the source, so a test fails only when something is genuinely undocumented, and
its message names what.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import typer


def _repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "ckptcheck").is_dir():
            return parent
    raise AssertionError(f"no repository root above {here}")


ROOT = _repo_root()
DOCS = ROOT / "docs"
COMMANDS_MD = DOCS / "commands.md"
SCHEMAS_MD = DOCS / "json-schemas.md"
README = ROOT / "README.md"
# The test command README.md gives and CI (.ci/run) runs: it must stay byte-identical.
TEST_COMMAND = 'pip install -e ".[test]" && python -m pytest -q'


# --- Markdown, as GitHub renders it (just enough of it) ---

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+(?:\"[^\"]*\"|'[^']*'))?\s*\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_HTML_ANCHOR = re.compile(r"<a\s+(?:[^>]*\s)?(?:id|name)=[\"']([^\"']+)[\"']", re.IGNORECASE)
_SCHEME = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*:|//)")


@dataclass(frozen=True)
class Heading:
    level: int
    text: str  # as rendered: code spans' contents kept, markup dropped
    line: int  # index into the file's lines


def _prose_lines(text: str) -> list[str | None]:
    """The file's lines, with every line inside a fenced code block (and the fences) replaced by None."""
    out: list[str | None] = []
    fence: str | None = None
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
            out.append(None)
        elif fence is not None:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                    and not line.strip()[len(match.group(1)):].strip():
                fence = None
            out.append(None)
        else:
            out.append(line)
    return out


def _rendered(inline: str) -> str:
    """Heading markup as text: code spans keep their content, links their text, emphasis markers go."""
    inline = _CODE_SPAN.sub(lambda m: m.group(2).strip(), inline)
    inline = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", inline)
    inline = re.sub(r"<[^>]+>", "", inline)
    return re.sub(r"(\*\*|__|\*|_(?=\W)|(?<=\W)_)", "", inline).strip()


def headings(path: Path) -> list[Heading]:
    found = []
    for number, line in enumerate(_prose_lines(path.read_text(encoding="utf-8"))):
        if line is None:
            continue
        match = _HEADING.match(line)
        if match:
            found.append(Heading(len(match.group(1)), _rendered(match.group(2)), number))
    return found


def slug(text: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), each space a
    hyphen."""
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a link may name in the file: its headings' slugs (a repeated one numbered, as GitHub does) and
    explicit ``<a id=...>`` / ``<a name=...>``."""
    seen: dict[str, int] = {}
    result = set()
    for heading in headings(path):
        base = slug(heading.text)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    result.update(_HTML_ANCHOR.findall(path.read_text(encoding="utf-8")))
    return result


def links(path: Path) -> Iterator[str]:
    """Every link target in the file's prose (not in code blocks or code spans)."""
    prose = "\n".join(line if line is not None else "" for line in _prose_lines(path.read_text(encoding="utf-8")))
    for paragraph in re.split(r"\n\s*\n", prose):
        paragraph = _CODE_SPAN.sub(lambda m: "code", paragraph)
        yield from _LINK.findall(paragraph)
        yield from _REFERENCE.findall(paragraph)


def section(path: Path, title: str) -> str | None:
    """The text under the first heading whose rendered text is ``title`` (or starts with it and a space, as in
    ``inspect PATH``), up to the next heading of the same or a higher level; None when there is no such heading.
    A leading ``ckptcheck `` in the heading is ignored."""
    lines = path.read_text(encoding="utf-8").split("\n")
    found = headings(path)
    for i, heading in enumerate(found):
        text = heading.text.removeprefix("ckptcheck ").strip()
        if text == title or text.startswith(title + " "):
            end = next((h.line for h in found[i + 1:] if h.level <= heading.level), len(lines))
            return "\n".join(lines[heading.line:end])
    return None


# --- what the package defines ---


def cli_commands() -> list[tuple[str, click.Command]]:
    """Every visible command of the app, as its path of names (``inspect``; ``group sub`` for a group's)."""
    import ckptcheck.cli

    root = typer.main.get_command(ckptcheck.cli.app)
    found: list[tuple[str, click.Command]] = []

    def walk(group: click.Command, prefix: str) -> None:
        if not isinstance(group, click.Group):
            return
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            if command is None or command.hidden:
                continue
            path = f"{prefix}{name}"
            found.append((path, command))
            walk(command, path + " ")

    walk(root, "")
    return found


def documented_options(command: click.Command) -> list[list[str]]:
    """Each visible option of a command, as the names it may be spelled by (``--no-config`` and ``--config`` are
    one option); help is documented in the intro of commands.md."""
    options = []
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        names = [*param.opts, *param.secondary_opts]
        if "--help" in names:
            continue
        options.append(names)
    return options


_SCHEMA = re.compile(r"ckptcheck\.[a-z][a-z0-9_-]*/[0-9]+")


def package_schemas() -> dict[str, list[str]]:
    """Every JSON schema id the package defines: each string constant in ckptcheck/ that is exactly
    ``ckptcheck.NAME/N``, with the files that hold it (found by reading the source, so modules that move or are added
    are found wherever they are, without importing TensorFlow)."""
    found: dict[str, list[str]] = {}
    for source in sorted((ROOT / "ckptcheck").rglob("*.py")):
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and _SCHEMA.fullmatch(node.value):
                found.setdefault(node.value, []).append(str(source.relative_to(ROOT)))
    return found


# --- the tests ---


def test_readme_starts_with_the_two_commands() -> None:
    """Right after the title and the one-line description: one block, installing and running the main job, then
    installing and running the tests with exactly the command CI runs."""
    lines = README.read_text(encoding="utf-8").split("\n")
    prose = [line for line in lines if line.strip()]
    assert prose[0].startswith("# ckptcheck"), prose[0]
    assert not prose[1].startswith(("#", "```")), "the one-line description should follow the title"
    assert prose[2].startswith("```"), (
        f"README.md: the two commands should come right after the description, not {prose[2]!r}")
    block = prose[3:prose.index("```", 3)]
    commands = [line for line in block if not line.startswith("#")]
    assert len(commands) == 2, f"README.md's first block should hold two commands, holds {commands}"
    assert commands[0].startswith("pip install"), commands[0]
    assert commands[1] == TEST_COMMAND, f"README.md's test command changed: {commands[1]!r} (CI runs {TEST_COMMAND!r})"


def test_every_command_has_a_section_in_commands_md() -> None:
    commands = cli_commands()
    assert commands, "no commands found in ckptcheck.cli.app"
    missing = [name for name, _ in commands if section(COMMANDS_MD, name) is None]
    assert not missing, (
        f"{COMMANDS_MD.relative_to(ROOT)} has no heading for: {', '.join(missing)} "
        "(add a `## NAME` section: what it does, its options, its exit codes)")


def test_every_option_is_mentioned_in_its_commands_section() -> None:
    undocumented = []
    for name, command in cli_commands():
        text = section(COMMANDS_MD, name)
        if text is None:
            continue  # reported by the test above
        for names in documented_options(command):
            if not any(re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text) for n in names):
                undocumented.append(f"{name} {'/'.join(names)}")
    assert not undocumented, (
        f"options not mentioned in their command's section of {COMMANDS_MD.relative_to(ROOT)}: "
        + "; ".join(undocumented))


def test_the_apps_own_options_are_documented() -> None:
    import ckptcheck.cli

    root = typer.main.get_command(ckptcheck.cli.app)
    text = COMMANDS_MD.read_text(encoding="utf-8")
    missing = ["/".join(names) for names in documented_options(root)
               if not any(re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text) for n in names)]
    assert not missing, f"{COMMANDS_MD.relative_to(ROOT)} does not mention: {', '.join(missing)}"


def test_every_schema_has_a_section_in_json_schemas_md() -> None:
    schemas = package_schemas()
    assert schemas, "no `ckptcheck.NAME/N` string constants found under ckptcheck/"
    titles = {heading.text for heading in headings(SCHEMAS_MD)}
    missing = [f"{schema} (in {', '.join(files)})" for schema, files in sorted(schemas.items())
               if not any(re.search(rf"(?<![\w./-]){re.escape(schema)}(?![\w/-])", title) for title in titles)]
    assert not missing, (
        f"{SCHEMAS_MD.relative_to(ROOT)} has no heading for: {'; '.join(missing)} "
        "(add a ``## `ckptcheck.NAME/N` `` section: which command writes it, its fields)")


def _markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


@pytest.mark.parametrize("document", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_lands(document: Path) -> None:
    broken = []
    for target in links(document):
        if not target or _SCHEME.match(target):
            continue
        path_part, _, anchor = target.partition("#")
        destination = (document.parent / path_part).resolve() if path_part else document
        if not destination.exists():
            where = destination.relative_to(ROOT) if ROOT in destination.parents else destination
            broken.append(f"{target} (no such file: {where})")
            continue
        if anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target} (no heading with anchor #{anchor} in {destination.relative_to(ROOT)})")
    assert not broken, f"{document.relative_to(ROOT)}: broken links: " + "; ".join(broken)


# --- the checker checks itself, on small documents whose right answers are known ---


def test_slugs_follow_githubs_rule() -> None:
    assert slug("`ckptcheck.restore-check/1`".strip("`")) == "ckptcheckrestore-check1"
    assert slug("What inspect shows") == "what-inspect-shows"
    assert slug("Migrating TF1 → TF2") == "migrating-tf1--tf2"
    assert slug(".keras with model.weights.npz") == "keras-with-modelweightsnpz"


def test_the_link_checker_finds_broken_links(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(
        "# A\n\n## Same name\n\n## Same name\n\n[ok](b.md#b-section) [ok](#same-name-1) "
        "[bad](b.md#nowhere) [bad](c.md)\n\n```\n[not a link](c.md)\n```\n\n`[code](c.md)` "
        "[ok](https://example.org/x)\n", encoding="utf-8")
    (tmp_path / "b.md").write_text("# B\n\n## B section\n", encoding="utf-8")
    found = list(links(tmp_path / "a.md"))
    assert found == ["b.md#b-section", "#same-name-1", "b.md#nowhere", "c.md", "https://example.org/x"]
    assert anchors(tmp_path / "a.md") == {"a", "same-name", "same-name-1"}
    assert anchors(tmp_path / "b.md") == {"b", "b-section"}


def test_a_section_ends_at_the_next_heading_of_its_level(tmp_path: Path) -> None:
    doc = tmp_path / "c.md"
    doc.write_text("# C\n\n## inspect\n\n`ckptcheck inspect PATH`\n\n### more\n\n--stats\n\n## inspector\n\n"
                   "--other\n", encoding="utf-8")
    text = section(doc, "inspect")
    assert text is not None and "--stats" in text and "--other" not in text
    assert section(doc, "insp") is None
    assert section(doc, "verify") is None
