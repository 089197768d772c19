"""README.md and docs/*.md stay true: links resolve, and the commands they show exist.

No server is started; the slowest part is `python -m benchmarks.NAME --help` (it imports torch).

Conventions the pages follow, and this test holds them to:

- Every relative link (`[text](path)`, `[text](path#anchor)`, `[text](#anchor)`, images too) points at
  a file or folder in the repository, and an anchor into a markdown file names one of its headings
  (GitHub's slugs: lower case, punctuation dropped, each space a hyphen, `-1`, `-2` for repeats).
- README.md is a front door: under 250 lines, linking every page of `DOC_PAGES`.
- Commands are read from shell code blocks (```bash, ```sh, ```console or no language) and from
  inline code. In them:
  - `svd-triton SUBCOMMAND ...` (not `docker run --entrypoint svd-triton IMAGE ...`): the subcommand (and a nested one: `jobs submit`, `weights pull`) is
    one that `svd-triton --help` lists, and every `--flag` / `-f` after it is in that subcommand's
    `--help`. `a|b` in a subcommand position means each of `a` and `b`; `[--flag X]` is optional.
  - `make TARGET ...`: TARGET is a target in the Makefile.
  - `python -m benchmarks.NAME ...`: `benchmarks/NAME.py` exists, and every flag is in its `--help`.
  - `pytest PATH -m EXPR`: PATH exists and EXPR's markers are declared in pyproject.toml.
- A whole inline code span that is a repository path (`src/...`, `tests/...`, `docker/...`, ...)
  names something that exists.
- The pages, and the comments and strings of the code, speak to users: what the project does and what
  was measured, never how or by whom it was built (`BUILD_PROCESS`).

The CLI runs as `sys.executable -m svd_triton` with the checkout's `src/` first on PYTHONPATH, so
the pages are checked against this tree's code rather than an older installed copy.
"""
from __future__ import annotations

import bisect
import functools
import os
import re
import shlex
import subprocess
import sys
import tokenize
import tomllib
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOC_PAGES = ("deployment.md", "gateway.md", "reference.md", "operations.md", "development.md", "security.md")
"""The pages the README's "where to go next" table must link."""
README_MAX_LINES = 250
SHELL_LANGUAGES = {"", "bash", "sh", "shell", "console"}
PATH_ROOTS = ("src", "tests", "model_repository", "docker", "benchmarks", "docs", "scripts")
NOT_IN_REPOSITORY = {"docker/weights"}
"""Paths the pages name that a user creates (compose's default weights folder), not the repository."""
HELP_TIMEOUT = 180


def doc_files() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# --- reading markdown --------------------------------------------------------------------------

@dataclass(frozen=True)
class Snippet:
    """A piece of code shown in a page: one logical line of a code block, or one inline code span."""

    file: Path
    line: int
    text: str
    inline: bool

    def where(self) -> str:
        return f"{rel(self.file)}:{self.line}"


FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
INLINE_CODE = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")


@dataclass(frozen=True)
class Paragraph:
    """Consecutive prose lines (outside code blocks, up to a blank line or a heading), joined by spaces:
    inline code and links may wrap across lines."""

    starts: tuple[int, ...]
    """Offset in `text` where each line begins."""
    first_line: int
    text: str

    def line_at(self, offset: int) -> int:
        return self.first_line + bisect.bisect_right(self.starts, offset) - 1


def paragraph(first_line: int, lines: list[str]) -> Paragraph:
    starts, text = [], ""
    for line in lines:
        starts.append(len(text))
        text += line.strip() + " "
    return Paragraph(tuple(starts), first_line, text)


@functools.cache
def parse(path: Path):
    """(prose paragraphs, snippets, heading slugs) of one markdown file."""
    paragraphs: list[Paragraph] = []
    snippets: list[Snippet] = []
    headings: list[str] = []
    fence: str | None = None
    language = ""
    pending: tuple[int, str] | None = None  # a code line continued with a trailing backslash
    current: tuple[int, list[str]] | None = None  # the prose paragraph being read

    def end_paragraph():
        nonlocal current
        if current:
            paragraphs.append(paragraph(*current))
        current = None

    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        opening = FENCE.match(line)
        if fence is None and opening:
            end_paragraph()
            fence, language = opening.group(1), opening.group(2).lower()
            continue
        if fence is not None:
            if line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
                if pending:
                    snippets.append(Snippet(path, pending[0], strip_comment(pending[1]), inline=False))
                fence, pending = None, None
                continue
            if language in SHELL_LANGUAGES:
                start, text = pending if pending else (number, "")
                text += line
                if line.endswith("\\"):
                    pending = (start, text[:-1] + " ")
                else:
                    snippets.append(Snippet(path, start, strip_comment(text), inline=False))
                    pending = None
            continue
        heading = HEADING.match(line)
        if heading or not line.strip():
            end_paragraph()
            if heading:
                headings.append(heading.group(2))
                paragraphs.append(paragraph(number, [heading.group(2)]))
            continue
        if current is None:
            current = (number, [])
        current[1].append(line)
    end_paragraph()
    for block in paragraphs:
        for match in INLINE_CODE.finditer(block.text):
            snippets.append(Snippet(path, block.line_at(match.start()), match.group(2).strip(), inline=True))
    return paragraphs, snippets, unique_slugs(headings)


def strip_comment(line: str) -> str:
    """A shell line without its comment: from a `#` that starts a word outside quotes."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip()
    return line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)  # links: their text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").strip().lower()
    kept = (c for c in text if c in " -" or unicodedata.category(c)[0] in "LMN" or unicodedata.category(c) == "Pc")
    return "".join(kept).replace(" ", "-")


def unique_slugs(headings: list[str]) -> set[str]:
    seen: dict[str, int] = {}
    slugs = set()
    for heading in headings:
        base = slug(heading)
        count = seen.get(base, 0)
        slugs.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return slugs


def links(path: Path):
    """(line number, target) of every link in the prose of `path` (code is not prose)."""
    for block in parse(path)[0]:
        text = INLINE_CODE.sub(lambda match: " " * len(match.group(0)), block.text)  # offsets kept
        for match in LINK.finditer(text):
            yield block.line_at(match.start()), match.group(1)
        for start, end in zip(block.starts, (*block.starts[1:], len(text))):
            reference = REFERENCE_LINK.match(text[start:end])  # `[name]: target`, a line of its own
            if reference:
                yield block.line_at(start), reference.group(1)


def snippets() -> list[Snippet]:
    return [snippet for path in doc_files() for snippet in parse(path)[1]]


# --- 1. links ----------------------------------------------------------------------------------

def link_problem(path: Path, target: str) -> str | None:
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto:, ...
        return None
    file_part, _, anchor = target.partition("#")
    destination = (path.parent / file_part).resolve() if file_part else path
    if ROOT not in (destination, *destination.parents):
        return f"points outside the repository ({destination})"
    if not destination.exists():
        return f"{rel(destination) if destination.is_relative_to(ROOT) else destination} does not exist"
    if anchor and destination.suffix == ".md":
        slugs = parse(destination)[2]
        if anchor not in slugs:
            near = sorted(s for s in slugs if s.split("-")[0] == anchor.split("-")[0])
            hint = f"; headings there that start alike: {', '.join(near)}" if near else ""
            return f"no heading with the anchor #{anchor} in {rel(destination)}{hint}"
    return None


def test_every_relative_link_resolves():
    problems = [f"{rel(path)}:{number}: link ({target}): {problem}"
                for path in doc_files() for number, target in links(path)
                if (problem := link_problem(path, target))]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_slugs_follow_github():
    assert slug("Deployment configuration (`config.pbtxt` parameters)") == "deployment-configuration-configpbtxt-parameters"
    assert slug("Scale-out: one GPU → many GPUs → many boxes") == "scale-out-one-gpu--many-gpus--many-boxes"
    assert slug("The model `svd_xt`") == "the-model-svd_xt"
    assert unique_slugs(["Errors", "Errors", "Errors"]) == {"errors", "errors-1", "errors-2"}


# --- 2. the README is a front door ----------------------------------------------------------------

def test_readme_is_short_and_links_every_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < README_MAX_LINES, f"README.md: {len(lines)} lines, keep it under {README_MAX_LINES}"
    linked = {(README.parent / target.partition("#")[0]).resolve() for _, target in links(README)}
    missing = [page for page in DOC_PAGES if (ROOT / "docs" / page).resolve() not in linked]
    assert not missing, f"README.md links no docs/{', docs/'.join(missing)}"
    absent = [page for page in DOC_PAGES if not (ROOT / "docs" / page).exists()]
    assert not absent, f"docs pages missing: {absent}"


# --- 3. commands -------------------------------------------------------------------------------

# Where a shell command ends: a comment, a pipe, a list operator, a subshell's close, a redirection.
COMMAND_END = re.compile(r"\s#|\s\|\s|\|\||&&|;|\s&(?:\s|$)|\)|\s[0-9]?>|\s<")
SVD_TRITON = re.compile(r"(?:^|(?<=[\s(/\"'=]))(?<!--entrypoint )svd-triton(?=\s|$)")
"""`svd-triton ...` commands; not `--entrypoint svd-triton IMAGE ...`, where docker puts the image between."""
MAKE = re.compile(r"(?:^|(?<=[\s(;&|]))make(?=\s)")
BENCHMARK = re.compile(r"-m\s+benchmarks\.([A-Za-z_]\w*)(?=\s|$)")
PYTEST = re.compile(r"(?:^|(?<=[\s/]))(?:-m\s+)?pytest(?=\s|$)")


def command_after(text: str, end: int) -> list[str]:
    """The words of the command that starts at `end` in `text`, up to where the shell command ends."""
    rest = text[end:]
    stop = COMMAND_END.search(rest)
    rest = rest[: stop.start()] if stop else rest
    try:
        words = shlex.split(rest)
    except ValueError:  # an unbalanced quote in a shortened example
        words = rest.split()
    return [word.strip("[]") for word in words if word.strip("[]")]


def flags_in(words: list[str]) -> list[str]:
    return [word.split("=", 1)[0] for word in words
            if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", word)]


def has_flag(help_text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def cli_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("COLUMNS", "200")
    return env


@functools.cache
def run_help(*command: str) -> tuple[int, str]:
    process = subprocess.run([sys.executable, *command, "--help"], check=False, cwd=ROOT, env=cli_environment(),
                             capture_output=True, text=True, timeout=HELP_TIMEOUT)
    return process.returncode, process.stdout + process.stderr


def cli_help(path: tuple[str, ...]) -> tuple[int, str]:
    return run_help("-m", "svd_triton", *path)


def subcommands(help_text: str) -> list[str]:
    """The choices of the first positional `{a,b,c}` in an argparse help text."""
    usage = help_text.split("\n\n")[0]
    choice = re.search(r"(?:^|[\s\]])\{([\w,-]+)\}\s*\.\.\.", usage)  # `{a,b} ...`, not `--flag {a,b}`
    return choice.group(1).split(",") if choice else []


def check_cli(path: tuple[str, ...], words: list[str], where: str, shown: str) -> list[str]:
    code, help_text = cli_help(path)
    name = " ".join(("svd-triton", *path))
    if code != 0:
        return [f"{where}: `{shown}`: `{name} --help` failed ({code}):\n{help_text.strip()[-2000:]}"]
    choices = subcommands(help_text)
    if choices and words and not words[0].startswith("-"):
        problems = []
        for alternative in words[0].split("|"):
            if alternative in choices:
                problems += check_cli((*path, alternative), words[1:], where, shown)
            else:
                problems.append(f"{where}: `{shown}`: `{name}` has no subcommand {alternative!r} "
                                f"(it has {', '.join(choices)})")
        return problems
    return [f"{where}: `{shown}`: `{name} --help` lists no {flag}"
            for flag in flags_in(words) if not has_flag(help_text, flag)]


def prefetch_cli_help() -> None:
    """The help of every subcommand, two levels deep, fetched in parallel (each is a process)."""
    code, top = cli_help(())
    if code != 0:
        return
    with ThreadPoolExecutor(max_workers=8) as pool:
        first = list(pool.map(lambda name: ((name,), cli_help((name,))), subcommands(top)))
        second = [(*path, child) for path, (status, text) in first if status == 0 for child in subcommands(text)]
        list(pool.map(cli_help, second))


def test_svd_triton_commands_exist():
    shown = [(snippet, match) for snippet in snippets() for match in SVD_TRITON.finditer(snippet.text)]
    assert shown, "no svd-triton command found in the docs: is the pattern still right?"
    prefetch_cli_help()
    problems = []
    for snippet, match in shown:
        words = command_after(snippet.text, match.end())
        text = " ".join(["svd-triton", *words])
        problems += check_cli((), words, snippet.where(), text)
    assert not problems, "svd-triton commands in the docs that the CLI does not have:\n" + "\n".join(problems)


def makefile_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([A-Za-z0-9][\w.-]*)\s*:(?!=)", text, re.MULTILINE))


def test_make_targets_exist():
    targets = makefile_targets()
    problems = []
    for snippet in snippets():
        for match in MAKE.finditer(snippet.text):
            words = command_after(snippet.text, match.end())
            for word in words:
                if word.startswith("-") or "=" in word:
                    continue
                if word not in targets:
                    problems.append(f"{snippet.where()}: `make {' '.join(words)}`: the Makefile has no target {word!r}")
    assert not problems, "make targets in the docs that the Makefile lacks:\n" + "\n".join(problems)


def test_benchmark_commands_exist():
    shown = [(snippet, match.group(1), command_after(snippet.text, match.end()))
             for snippet in snippets() for match in BENCHMARK.finditer(snippet.text)]
    problems = [f"{snippet.where()}: `python -m benchmarks.{name}`: benchmarks/{name}.py does not exist"
                for snippet, name, _ in shown if not (ROOT / "benchmarks" / f"{name}.py").exists()]
    names = sorted({name for _, name, _ in shown if (ROOT / "benchmarks" / f"{name}.py").exists()})
    with ThreadPoolExecutor(max_workers=4) as pool:
        helps = dict(zip(names, pool.map(lambda name: run_help("-m", f"benchmarks.{name}"), names)))
    for snippet, name, words in shown:
        if name not in helps:
            continue
        code, help_text = helps[name]
        command = " ".join([f"python -m benchmarks.{name}", *words])
        if code != 0:
            problems.append(f"{snippet.where()}: `{command}`: `python -m benchmarks.{name} --help` failed "
                            f"({code}):\n{help_text.strip()[-2000:]}")
            continue
        problems += [f"{snippet.where()}: `{command}`: `python -m benchmarks.{name} --help` lists no {flag}"
                     for flag in flags_in(words) if not has_flag(help_text, flag)]
    assert not problems, "benchmark commands in the docs that do not run as shown:\n" + "\n".join(problems)


def declared_markers() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    markers = config["tool"]["pytest"]["ini_options"].get("markers", [])
    return {marker.split(":")[0].split("(")[0].strip() for marker in markers}


def test_pytest_commands_name_real_paths_and_markers():
    markers = declared_markers()
    problems = []
    for snippet in snippets():
        for match in PYTEST.finditer(snippet.text):
            words = command_after(snippet.text, match.end())
            command = " ".join(["pytest", *words])
            skip_value = False
            for index, word in enumerate(words):
                if skip_value:
                    skip_value = False
                    continue
                if word == "-m" and index + 1 < len(words):
                    unknown = set(re.findall(r"[A-Za-z_]\w*", words[index + 1])) - {"and", "or", "not"} - markers
                    problems += [f"{snippet.where()}: `{command}`: marker {name!r} is not declared in pyproject.toml"
                                 for name in sorted(unknown)]
                    skip_value = True
                elif word in ("-k", "-p", "-c", "--rootdir"):
                    skip_value = True
                elif not word.startswith("-") and not (ROOT / word.split("::")[0]).exists():
                    problems.append(f"{snippet.where()}: `{command}`: {word.split('::')[0]} does not exist")
    assert not problems, "pytest commands in the docs that would not run:\n" + "\n".join(problems)


# --- paths named in inline code ----------------------------------------------------------------

REPOSITORY_PATH = re.compile(rf"(?:{'|'.join(PATH_ROOTS)})/[\w./-]*")


def test_repository_paths_in_inline_code_exist():
    problems = []
    for snippet in snippets():
        if not snippet.inline or not REPOSITORY_PATH.fullmatch(snippet.text):
            continue
        path = snippet.text.rstrip("/")
        if path not in NOT_IN_REPOSITORY and not (ROOT / path).exists():
            problems.append(f"{snippet.where()}: `{snippet.text}` does not exist")
    assert not problems, "paths in the docs that are not in the repository:\n" + "\n".join(problems)


# --- 4. written for users ----------------------------------------------------------------------

BUILD_PROCESS = tuple(re.compile(pattern, re.IGNORECASE) for pattern in (
    r"\bsessions? that (?:built|wrote)\b",
    r"\bthe session was started\b",
    r"\bsession's \$OUT\b",
    r"\blent\b",
    r"\bdevice[- ]tool\b",
    r"\bdevice machine\b",
    r"\bKINDS\.md\b",
    r"\bby chance\b",
    r"\b(?:the|this|a) task (?:that wrote|had no|has one|with a GPU|may be)\b",
    r"\bwhen a task\b",
    r"\bGPU window\b",
    r"\bworkplace\b",
    r"\bfiles_at\b",
    r"\bgive_back\b",
    r"\btimeout_s`?\W{0,4}\d",
    r"\bcarry\W{0,3}\[",
))
"""Phrases about how the project was built (who had which machine, and the tools they worked with),
which have no place in what a user reads."""
USER_FACING_CODE = ("src", "benchmarks", "scripts", "tests", "docker", "model_repository", "Makefile", "pyproject.toml")
"""Besides README.md and docs/: code whose comments, docstrings and messages users read."""
TEXT_SUFFIXES = {".md", ".py", ".sh", ".txt", ".toml", ".yaml", ".yml", ".pbtxt", ".cfg", ".ini", ".html", ".js", ".css"}
SKIPPED_PARTS = {"__pycache__", ".venv", "node_modules"}


def user_facing_files() -> list[Path]:
    files = doc_files()
    for name in USER_FACING_CODE:
        top = ROOT / name
        candidates = [top] if top.is_file() else sorted(path for path in top.rglob("*") if path.is_file())
        files += [path for path in candidates
                  if (path.suffix in TEXT_SUFFIXES or path.name.startswith(("Makefile", "Dockerfile")))
                  and not SKIPPED_PARTS & set(path.relative_to(ROOT).parts)
                  and not any(part.endswith(".egg-info") for part in path.parts)
                  and path.resolve() != Path(__file__).resolve()]  # this file names the phrases
    return files


def prose(path: Path) -> list[tuple[int, str]]:
    """(line, text) of what a user reads in `path`: a Python file's comments and strings (docstrings,
    messages), any other file whole, each line with the next one (a phrase may wrap)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix != ".py":
        return pairs_of_lines(text)
    kinds = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    try:
        tokens = list(tokenize.generate_tokens(iter(text.splitlines(keepends=True)).__next__))
    except (tokenize.TokenError, SyntaxError):  # a file being edited: read it whole
        return pairs_of_lines(text)
    return [(token.start[0], " ".join(token.string.replace("#", " ").split())) for token in tokens if token.type in kinds]


def pairs_of_lines(text: str) -> list[tuple[int, str]]:
    lines = [line.strip().lstrip("#").strip() for line in text.splitlines()] + [""]
    return [(number, f"{line} {after}") for number, (line, after) in enumerate(zip(lines, lines[1:]), start=1)]


def build_process_phrases(text: str) -> list[str]:
    return [match.group(0) for pattern in BUILD_PROCESS for match in pattern.finditer(text)]


def test_build_process_patterns_catch_such_phrases_and_nothing_else():
    caught = ["the sessions that built this had no Docker or GPU", "no GPU was lent to the task that wrote this",
              "A task may be lent a GPU by chance", "the device tool's `run`", "the device tool's `status`",
              'carry `[".whl"]`', "`timeout_s` 540", "timeout_s 540", "(KINDS.md's pip list)", "the lent GPU machine",
              "One lent GPU window, one command", "a session's $OUT", "which this task had no GPU for",
              "the checkout the session was started in", "DIR being the reply's `files_at` folder",
              "Then `give_back` at once.", "on the device machine", "When a task has one, one device-tool call"]
    assert [phrase for phrase in caught if not build_process_phrases(phrase)] == []
    kept = ["with store.session() as session:", "@pytest.fixture(scope=\"session\")", "kept in the tab's session storage",
            "with requests.Session() as session:", "a cancelled asyncio task", "task cancellation", "start_new_session=True",
            "the session tritonservers", "Each worker starts its own session servers", "outputs carry a batch dimension",
            "Gateway jobs carry their own log", "silent.settimeout(10)", "the GPU box wrote its table to $OUT",
            "the CPU rehearsal", "scripts/gpu_session.sh", "AWS_SESSION_TOKEN", "ERROR_KINDS", "talent", "excellent"]
    assert {phrase: build_process_phrases(phrase) for phrase in kept if build_process_phrases(phrase)} == {}


def test_pages_and_code_speak_to_users_not_of_how_they_were_built():
    problems = list(dict.fromkeys(f"{rel(path)}:{line}: {phrase!r}" for path in user_facing_files()
                                  for line, text in prose(path) for phrase in build_process_phrases(text)))
    assert not problems, ("say what the project does and what was measured, not how or by whom it was built:\n"
                          + "\n".join(problems))
