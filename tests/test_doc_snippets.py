"""The snippets of README.md and docs/*.md that are marked runnable, run.

The marker: a fenced code block whose info string is its language followed
by the word `runnable`:

    ```python runnable          ```sh runnable
    print("checked")            jobd-cli --help
    ```                         ```

Renderers highlight by the first word and ignore the rest, so the marker
does not show. Languages: `python`, and `sh`/`bash` (run with `bash -e`); a
runnable block in another language fails the test. Mark a block only when
it can run in a test environment as written; a block that needs root,
systemd or the network stays unmarked.

How the blocks of one document run: in order, each in a subprocess, in one
fresh temporary directory (the working directory, also first on PYTHONPATH)
with the test environment's `bin` first on PATH, against a real daemon
started for that document with one worker and the bundled example handlers
(`jobd.examples`): JOBD_SOCKET is its socket and JOBD_DATA_DIR its data dir
(one job has completed there). A Python block whose first line is a comment
naming a `.py` file (`# myapp/tasks.py`) is written to that path and
imported as that module, so its `@handler` names are the real ones; later
blocks of the document can import it too. Every block must exit 0.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, DaemonProc

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNERS = {"python": "python", "sh": "bash", "bash": "bash"}
MARKER = "runnable"
SNIPPET_TIMEOUT = 60.0
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
MODULE_FILE = re.compile(r"^#\s*(?P<path>[\w/]+\.py)\s*$")


@dataclass(frozen=True)
class Snippet:
    document: Path
    line: int                 # of the opening fence, 1-based
    language: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def fenced_blocks(text: str) -> Iterator[tuple[int, str, str]]:
    """(line of the fence, info string, code) for every fenced block, indented ones too."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        end = i + 1
        while end < len(lines) and not _closes(lines[end], fence):
            end += 1
        code = textwrap.dedent("\n".join(line[indent:] if line[:indent].isspace() else line
                                         for line in lines[i + 1:end]))
        yield i + 1, opening["info"].strip(), code + "\n"
        i = end + 1


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return stripped.startswith(fence[0] * len(fence)) and not stripped.strip(fence[0])


def runnable_snippets(document: Path) -> list[Snippet]:
    out = []
    for line, info, code in fenced_blocks(document.read_text()):
        words = info.split()
        if MARKER in words[1:]:
            out.append(Snippet(document, line, words[0], code))
    return out


MARKED = {doc: snippets for doc in DOCUMENTS if (snippets := runnable_snippets(doc))}


# --- running them ---------------------------------------------------------------------------

def snippet_env(workdir: Path, daemon: DaemonProc) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("JOBD_") and k not in ("COLUMNS", "LINES", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = str(workdir)
    env["JOBD_SOCKET"], env["JOBD_DATA_DIR"] = daemon.socket, daemon.data_dir
    return env


def argv_for(snippet: Snippet, workdir: Path) -> list[str]:
    """Write the snippet where it runs from; the command that runs it."""
    if snippet.language not in RUNNERS:
        raise AssertionError(f"{snippet.where}: cannot run a {snippet.language!r} block; "
                             f"runnable languages: {', '.join(RUNNERS)}")
    if RUNNERS[snippet.language] == "bash":
        script = workdir / f"snippet_{snippet.line}.sh"
        script.write_text(snippet.code)
        return ["bash", "-e", str(script)]
    module = MODULE_FILE.match(snippet.code.splitlines()[0] if snippet.code.strip() else "")
    if module is not None:
        path = workdir / module["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(snippet.code)
        name = module["path"].removesuffix(".py").replace("/", ".")
        return [sys.executable, "-c", f"import {name}"]
    script = workdir / f"snippet_{snippet.line}.py"
    script.write_text(snippet.code)
    return [sys.executable, str(script)]


def run_snippet(snippet: Snippet, workdir: Path, env: dict[str, str]
                ) -> subprocess.CompletedProcess[str]:
    argv = argv_for(snippet, workdir)
    try:
        return subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True,
                              timeout=SNIPPET_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{snippet.where} ran over {SNIPPET_TIMEOUT:g}s: "
                             f"{shlex.join(argv)}") from None


@pytest.fixture
def doc_daemon(make_daemon: Callable[..., DaemonProc]) -> DaemonProc:
    """A daemon like one a reader starts from the docs: the example handlers, a job done."""
    daemon = make_daemon(workers=1, handlers="jobd.examples")
    client = daemon.client()
    client.wait(client.submit("jobd.examples.add", args=[1, 2]), timeout=30)
    return daemon


@pytest.mark.parametrize("document", list(MARKED), ids=lambda d: str(d.relative_to(ROOT)))
def test_runnable_snippets_run(document: Path, doc_daemon: DaemonProc, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = snippet_env(workdir, doc_daemon)
    for snippet in MARKED[document]:
        done = run_snippet(snippet, workdir, env)
        assert done.returncode == 0, (
            f"{snippet.where} ({snippet.language}) exited {done.returncode}\n"
            f"--- code\n{snippet.code}--- stdout\n{done.stdout}--- stderr\n{done.stderr}")


# --- what the runner relies on -------------------------------------------------------------------

def test_the_marked_snippets_are_found() -> None:
    """The documents that promise runnable examples have them (a marker typo
    would otherwise turn this file into a test of nothing)."""
    marked = {doc.relative_to(ROOT).as_posix(): len(snippets) for doc, snippets in MARKED.items()}
    for document in ("docs/cli.md", "docs/handlers.md", "docs/wal.md"):
        assert marked.get(document, 0) >= 1, marked
    languages = {s.language for snippets in MARKED.values() for s in snippets}
    assert languages <= set(RUNNERS), languages


def test_the_marker_is_the_word_runnable_after_the_language() -> None:
    text = textwrap.dedent("""\
        ```python runnable
        print(1)
        ```
        ```python
        print(2)
        ```
        1. a list item

           ```sh runnable
           echo "indented"
           ```
        ~~~~bash runnable
        ```
        echo inner fence
        ~~~~
        ```runnable
        not a language
        ```
        """)
    found = [(info.split()[0] if info.split() else "", code)
             for _, info, code in fenced_blocks(text) if MARKER in info.split()[1:]]
    assert found == [("python", "print(1)\n"), ("sh", 'echo "indented"\n'),
                     ("bash", "```\necho inner fence\n")]


def test_the_wal_inspection_snippet_reports_the_daemons_records(doc_daemon: DaemonProc,
                                                                tmp_path: Path) -> None:
    """Not only exit 0: it found the segment and the submitted job."""
    (snippet,) = MARKED[ROOT / "docs" / "wal.md"]
    done = run_snippet(snippet, tmp_path, snippet_env(tmp_path, doc_daemon))
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert re.match(r"0+1\.log: \d+ records \{.*'S': 1.*\}, \d+ bytes, intact$", first), done.stdout
    assert "1 job(s) submitted here" in done.stdout


def test_operations_install_steps_match_the_unit() -> None:
    """docs/operations.md creates the user the unit's header says, with the same
    flags, and points ExecStart at the virtual environment the unit suggests."""
    unit = (ROOT / "systemd" / "jobd.service").read_text()
    ops = (ROOT / "docs" / "operations.md").read_text()

    def useradd(text: str) -> list[str]:
        joined = re.sub(r"\\\n[#\s]*", " ", text)          # join continued lines
        match = re.search(r"useradd [^\n`]*", joined)
        assert match is not None
        return sorted(match.group().split())
    assert useradd(ops) == useradd(unit)
    suggested = re.search(r"#\s+ExecStart=(\S+/bin/jobd) serve", unit)
    assert suggested is not None
    assert f"ExecStart={suggested.group(1)} serve" in ops
    venv = suggested.group(1).removesuffix("/bin/jobd")
    assert f"python3 -m venv {venv}\n" in ops and f"{venv}/bin/pip install jobd-queue" in ops
    for directory in ("StateDirectory=jobd", "RuntimeDirectory=jobd", "User=jobd", "Group=jobd"):
        assert directory in unit
    assert "/var/lib/jobd" in ops and "/run/jobd/jobd.sock" in ops
