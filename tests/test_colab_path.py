"""A chapter runs the way a reader runs it in Google Colab.

Every chapter starts with an install cell that installs mtlbook only inside Colab::

    if "google.colab" in sys.modules:
        %pip install -q "mtlbook[figures] @ git+https://github.com/mtlbook/mtlbook"

The ``colab`` tests rebuild that situation outside the repository:

1. a fresh virtual environment holds what Colab preinstalls (PyTorch, NumPy, pandas,
   Matplotlib, seaborn, scikit-learn, ipywidgets, ipykernel) plus nbclient and nbformat to
   execute notebooks, and not mtlbook;
2. one chapter is copied to a temporary folder and its install cell is pointed at a local
   git repository instead of GitHub;
3. the chapter is executed in a kernel of that environment in which ``google.colab`` is
   imported at start-up, as in Colab, so the install cell really runs ``%pip install``.

The local repository is a one-commit snapshot of this work tree (its tracked files and
its untracked files that git does not ignore), not the committed HEAD: pip installs a
``git+file://`` URL from the commit, and a snapshot lets the test check the package and
chapter that the rest of the test suite checks, also before they are committed. On a
clean clone, as in CI, the snapshot has the same files as HEAD.

The environment needs PyPI (the install cell builds mtlbook and installs its missing
dependencies, like in Colab); without it the tests fail and say so. They take a few
minutes, so they can be deselected with ``pytest -m "not colab"``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
HELPER = Path(__file__).resolve().parent / "colab" / "run_notebook.py"

# The chapter executed in the Colab-like environment: the fastest to run of the book.
CHAPTER = ROOT / "chapters" / "12_3_2_soft_sharing.ipynb"
# The URL that every install cell installs from, and the install cell's code around it.
PUBLIC_URL = "git+https://github.com/mtlbook/mtlbook"
COLAB_GUARD = 'if "google.colab" in sys.modules:'
INSTALL_LINE = f'%pip install -q "mtlbook[figures] @ {PUBLIC_URL}"'

# What Colab preinstalls that a chapter uses (PyTorch comes from the project's pin, below),
# and what the test needs to execute a notebook. Everything else that mtlbook depends on
# (e.g. tqdm) is left for the install cell to bring.
COLAB_PREINSTALLED = [
    "numpy",
    "pandas",
    "matplotlib",
    "seaborn",
    "scikit-learn",
    "ipywidgets",
    "ipykernel",
]
EXECUTION_TOOLS = ["nbclient", "nbformat"]
KERNEL_NAME = "colab-like"

# Seconds each step may take before the test gives up on it.
VENV_TIMEOUT = 120
PIP_TIMEOUT = 600
GIT_TIMEOUT = 60
PROBE_TIMEOUT = 60
CELL_TIMEOUT = 300
NOTEBOOK_TIMEOUT = 900

PYPI_HINT = (
    "This test installs packages from PyPI, like Colab does: check that this machine "
    "can reach the package index (`python -m pip config list` shows pip's settings). "
    "To leave the Colab test out, deselect it with -m 'not colab'."
)


def _torch_spec() -> str:
    """The PyTorch pin of the project's environment script, so both install the same build."""
    script = ROOT / "tools" / "env.sh"
    found = re.search(
        r'^_mtlbook_torch_spec="(torch==[^"]+)"$', script.read_text(encoding="utf-8"), flags=re.M
    )
    assert found, f'{script} no longer sets _mtlbook_torch_spec="torch==<version>"'
    return found.group(1)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _call(
    cmd: list[str], *, timeout: int, cwd: Path, env: dict[str, str]
) -> tuple[int | None, str]:
    """Run ``cmd`` in a process group of its own; return its exit code and its output
    (stdout, then stderr). The exit code is None if it ran past ``timeout`` seconds: then its
    whole group is killed (a notebook kernel, which jupyter_client starts in a session of its
    own, exits by itself when the process that started it is gone)."""
    process = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        return None, stdout + stderr
    return process.returncode, stdout + stderr


def _run(
    cmd: list[str], *, what: str, timeout: int, cwd: Path, env: dict[str, str], hint: str = ""
) -> str:
    """Run ``cmd`` and return its output; fail the test, with the last lines of that output,
    if it runs past ``timeout`` seconds or exits non-zero."""
    status, output = _call(cmd, timeout=timeout, cwd=cwd, env=env)
    if status is None:
        pytest.fail(
            f"{what} did not finish within {timeout} s. {hint}\n"
            f"--- last lines of its output ---\n{_tail(output)}",
            pytrace=False,
        )
    if status != 0:
        pytest.fail(
            f"{what} failed (exit code {status}). {hint}\n"
            f"--- last lines of its output ---\n{_tail(output)}",
            pytrace=False,
        )
    return output


def _clean_env(venv: Path) -> dict[str, str]:
    """This process's environment as seen from inside ``venv``: no trace of the test's own
    virtual environment, no preset Python path, Matplotlib backend or pip prompt."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "MPLBACKEND"}
    }
    own_bin = str(Path(sys.prefix) / "bin")
    path = [entry for entry in env.get("PATH", "").split(os.pathsep) if entry and entry != own_bin]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    env["VIRTUAL_ENV"] = str(venv)
    env["PIP_NO_INPUT"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _snapshot_work_tree(dest: Path, env: dict[str, str]) -> str:
    """Copy the work tree's files that git tracks or does not ignore into ``dest`` and commit
    them there as one commit; return that commit's id."""
    git = ["git", "-c", "core.autocrlf=false"]
    listed = _run(
        [*git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        what="listing the work tree's files with git",
        timeout=GIT_TIMEOUT,
        cwd=ROOT,
        env=env,
    )
    dest.mkdir(parents=True)
    copied = 0
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not os.path.lexists(source):  # tracked, but deleted in the work tree
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
        copied += 1
    assert (dest / "pyproject.toml").is_file(), f"the snapshot of {ROOT} has no pyproject.toml"
    identity = [
        "-c",
        "user.name=mtlbook tests",
        "-c",
        "user.email=tests@mtlbook.invalid",
        "-c",
        "commit.gpgsign=false",
    ]
    steps = {
        "init": ["init", "-q"],
        "add": ["add", "-A"],
        "commit": [
            *identity,
            "commit",
            "-q",
            "--no-verify",
            "-m",
            f"Snapshot of the work tree ({copied} files)",
        ],
    }
    for name, args in steps.items():
        _run(
            [*git, *args],
            what=f"git {name} in the snapshot",
            timeout=GIT_TIMEOUT,
            cwd=dest,
            env=env,
        )
    return _run(
        [*git, "rev-parse", "HEAD"],
        what="git rev-parse in the snapshot",
        timeout=GIT_TIMEOUT,
        cwd=dest,
        env=env,
    ).strip()


def _install_cell(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code_cells, "the notebook has no code cell"
    return code_cells[0]


def _point_install_cell_at(notebook: nbformat.NotebookNode, url: str) -> None:
    """Replace the public repository URL of the install cell by ``url``, in place."""
    cell = _install_cell(notebook)
    assert COLAB_GUARD in cell.source and cell.source.count(INSTALL_LINE) == 1, (
        f"the first code cell of {CHAPTER.name} is not the Colab install cell this test "
        f"expects ({COLAB_GUARD!r} then {INSTALL_LINE!r}); it is:\n{cell.source}"
    )
    cell.source = cell.source.replace(PUBLIC_URL, url)
    assert url in cell.source and PUBLIC_URL not in cell.source, "the URL was not rewritten"


def _cell_text(cell: nbformat.NotebookNode) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type == "error":
            parts.append("\n".join([f"{output.ename}: {output.evalue}", *output.traceback]))
        elif "text/plain" in output.get("data", {}):
            parts.append(output.data["text/plain"])
    return "".join(parts)


@dataclass(frozen=True)
class ColabRun:
    """What the Colab-like run produced, for the tests to check."""

    python: Path
    venv: Path
    workdir: Path
    snapshot_url: str
    snapshot_commit: str
    executed: nbformat.NotebookNode
    status: int | None  # exit code of tests/colab/run_notebook.py; None: it timed out
    log: str


@pytest.fixture(scope="module")
def colab_run(tmp_path_factory) -> Iterator[ColabRun]:
    """Build the Colab-like environment, run the chapter there, then delete the environment."""
    base = tmp_path_factory.mktemp("colab")
    venv, workdir = base / "venv", base / "notebook"
    workdir.mkdir()
    env = _clean_env(venv)

    # 1. The environment: Colab's preinstalled libraries, not mtlbook.
    _run(
        [sys.executable, "-m", "venv", str(venv)],
        what="creating the virtual environment",
        timeout=VENV_TIMEOUT,
        cwd=base,
        env=env,
    )
    python = venv / "bin" / "python"
    # Colab has a current pip; the one that `venv` bundles can be years older (pip < 24
    # rejects a `name @ git+file:///path` requirement, for one).
    _run(
        [str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
        what="pip install --upgrade pip",
        timeout=PIP_TIMEOUT,
        cwd=base,
        env=env,
        hint=PYPI_HINT,
    )
    # --no-compile: byte-compiling ~30,000 files would triple the time; Python compiles
    # what the chapter imports when it imports it.
    requirements = [_torch_spec(), *COLAB_PREINSTALLED, *EXECUTION_TOOLS]
    _run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-compile", *requirements],
        what=f"pip install {' '.join(requirements)}",
        timeout=PIP_TIMEOUT,
        cwd=base,
        env=env,
        hint=PYPI_HINT,
    )
    _run(
        [
            str(python),
            "-c",
            "import importlib.util, sys; sys.exit(importlib.util.find_spec('mtlbook') is not None)",
        ],
        what="checking that the fresh environment has no mtlbook",
        timeout=PROBE_TIMEOUT,
        cwd=workdir,
        env=env,
    )

    # 2. The repository to install from, and the chapter pointed at it.
    snapshot = base / "repo"
    commit = _snapshot_work_tree(snapshot, env)
    url = "git+" + snapshot.as_uri()
    notebook = nbformat.read(CHAPTER, as_version=4)
    _point_install_cell_at(notebook, url)
    copy = workdir / CHAPTER.name
    nbformat.write(notebook, copy)

    # 3. A kernel of that environment that imports google.colab at start-up, like Colab's.
    fake = base / "fake_colab"
    (fake / "google" / "colab").mkdir(parents=True)  # `google` stays a namespace package
    (fake / "google" / "colab" / "__init__.py").write_text(
        '"""Stand-in for Colab\'s module: its presence is what the install cell checks."""\n',
        encoding="utf-8",
    )
    spec_dir = base / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [
            str(python),
            "-m",
            "ipykernel_launcher",
            "-f",
            "{connection_file}",
            "--IPKernelApp.exec_lines=import google.colab",
        ],
        "display_name": "Python 3 (Colab-like)",
        "language": "python",
        "env": {"PYTHONPATH": str(fake)},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    run_env = {
        **env,
        "JUPYTER_PATH": str(base / "jupyter"),
        "IPYTHONDIR": str(base / "ipython"),
        "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
    }

    executed_path = workdir / f"executed_{CHAPTER.name}"
    status, log = _call(
        [
            str(python),
            str(HELPER),
            str(copy),
            str(executed_path),
            "--kernel",
            KERNEL_NAME,
            "--cell-timeout",
            str(CELL_TIMEOUT),
        ],
        timeout=NOTEBOOK_TIMEOUT,
        cwd=workdir,
        env=run_env,
    )
    if status is None:
        log += f"\nexecuting {CHAPTER.name} did not finish within {NOTEBOOK_TIMEOUT} s"
    if not executed_path.is_file():
        pytest.fail(
            f"executing {CHAPTER.name} in the Colab-like kernel wrote no notebook.\n"
            f"--- last lines of its output ---\n{_tail(log)}",
            pytrace=False,
        )

    yield ColabRun(
        python=python,
        venv=venv,
        workdir=workdir,
        snapshot_url=url,
        snapshot_commit=commit,
        executed=nbformat.read(executed_path, as_version=4),
        status=status,
        log=log,
    )
    shutil.rmtree(venv, ignore_errors=True)  # about a gigabyte; the executed notebook stays


def test_every_install_cell_installs_from_the_public_repository():
    """Readers in Colab install from GitHub: no chapter may point elsewhere (e.g. a local path)."""
    chapters = sorted((ROOT / "chapters").glob("*.ipynb"))
    assert CHAPTER in chapters
    for path in chapters:
        cell = _install_cell(nbformat.read(path, as_version=4))
        assert COLAB_GUARD in cell.source, f"{path.name}: the install cell lost its Colab guard"
        # a chapter may ask for an extra of the package, e.g. "mtlbook[stream] @ ..."
        assert re.search(r'%pip install -q "mtlbook(\[[a-z,-]+\])? @ ', cell.source), (
            f"{path.name}: the install cell does not run {INSTALL_LINE} (extras allowed)"
        )
        urls = re.findall(r"git\+\S+?(?=\")", cell.source)
        assert urls == [PUBLIC_URL], f"{path.name}: the install cell installs from {urls}"


@pytest.mark.colab
def test_install_cell_installs_mtlbook_from_the_repository(colab_run):
    """The install cell put mtlbook into the environment, from the snapshot's commit."""
    install_output = _cell_text(_install_cell(colab_run.executed))
    assert "ERROR" not in install_output, f"pip reported an error:\n{install_output}\n{PYPI_HINT}"
    # Where `import mtlbook` finds the package, and what pip recorded about it; importing it
    # for real would only add the seconds of importing PyTorch (the chapter did import it).
    probe = (
        "import importlib.metadata as m, importlib.util as u, json; "
        "d = m.distribution('mtlbook'); print(json.dumps({"
        "'file': u.find_spec('mtlbook').origin, 'version': d.version, "
        "'direct_url': d.read_text('direct_url.json')}))"
    )
    output = _run(
        [str(colab_run.python), "-c", probe],
        what="locating mtlbook in the environment",
        timeout=PROBE_TIMEOUT,
        cwd=colab_run.workdir,
        env=_clean_env(colab_run.venv),
    )
    found = json.loads(output.strip().splitlines()[-1])

    location = Path(found["file"]).resolve()
    assert location.is_relative_to(colab_run.venv.resolve()), (
        f"mtlbook is imported from {location}, not from the environment {colab_run.venv}"
    )
    assert "site-packages" in location.parts, f"mtlbook is not an installed copy: {location}"
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert found["version"] == expected["project"]["version"]
    direct_url = json.loads(found["direct_url"])
    assert direct_url["url"] == colab_run.snapshot_url.removeprefix("git+")
    assert direct_url["vcs_info"]["vcs"] == "git"
    assert direct_url["vcs_info"]["commit_id"] == colab_run.snapshot_commit


@pytest.mark.colab
def test_chapter_runs_to_the_end(colab_run):
    """Every cell of the chapter ran, none raised."""
    install_output = _cell_text(_install_cell(colab_run.executed))
    assert colab_run.status == 0, (
        f"{CHAPTER.name} failed in the Colab-like kernel.\n--- install cell output ---\n"
        f"{install_output}\n--- last lines of the run ---\n{_tail(colab_run.log)}"
    )
    code_cells = [cell for cell in colab_run.executed.cells if cell.cell_type == "code"]
    not_run = [i for i, cell in enumerate(code_cells) if cell.get("execution_count") is None]
    assert not not_run, f"code cells {not_run} of {CHAPTER.name} did not run"
    errors = [
        _cell_text(cell)
        for cell in code_cells
        if any(out.output_type == "error" for out in cell.get("outputs", []))
    ]
    assert not errors, f"cells of {CHAPTER.name} raised:\n" + "\n".join(errors)


@pytest.mark.colab
def test_chapter_shows_its_results(colab_run):
    """The executed chapter holds printed results and figures, as a reader would see them."""
    code_cells = [cell for cell in colab_run.executed.cells if cell.cell_type == "code"]
    with_outputs = [cell for cell in code_cells[1:] if cell.get("outputs")]
    figures = [
        out
        for cell in code_cells
        for out in cell.get("outputs", [])
        if "image/png" in out.get("data", {})
    ]
    assert len(with_outputs) >= len(code_cells[1:]) // 2, (
        f"only {len(with_outputs)} of {len(code_cells) - 1} code cells after the install cell "
        "produced output"
    )
    assert figures, f"{CHAPTER.name} drew no figure in the Colab-like kernel"
