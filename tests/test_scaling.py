"""Tests of mtlbook.book.appendix_b: launching scripts under torchrun and collecting
their result."""

from __future__ import annotations

import json
import os
import textwrap

import pytest

from mtlbook.book import appendix_b as scaling

# The worker loads mtlbook/scaling.py by path (it needs only the standard library), so that
# its processes start without importing torch.
WORKER = textwrap.dedent(f"""
    import importlib.util, os, sys
    spec = importlib.util.spec_from_file_location("scaling", {scaling.__file__!r})
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    write_result = module.write_result
    wrote = write_result({{"rank": int(os.environ["RANK"]),
                          "world": int(os.environ["WORLD_SIZE"]), "args": sys.argv[1:]}})
    # only rank 0 may write; the others report through their exit status
    sys.exit(0 if wrote == (os.environ["RANK"] == "0") else 7)
""")


def test_two_processes_rank0_result(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = scaling.run_torchrun(script, 2, ["a", 3], timeout_s=120)
    assert result["rank"] == 0 and result["world"] == 2
    assert result["args"] == ["a", "3"]
    assert result["launch_seconds"] > 0


def test_failing_script_raises_with_output(tmp_path):
    script = tmp_path / "fails.py"
    script.write_text("raise ValueError('boom from the worker')\n")
    with pytest.raises(RuntimeError, match="boom from the worker"):
        scaling.run_torchrun(script, 1, timeout_s=120)


def test_script_without_result_raises(tmp_path):
    script = tmp_path / "silent.py"
    script.write_text("print('no result')\n")
    with pytest.raises(RuntimeError, match="no result written"):
        scaling.run_torchrun(script, 1, timeout_s=120)


def test_timeout_raises_and_ends_the_workers(tmp_path):
    script = tmp_path / "sleeps.py"
    pid_file = tmp_path / "worker.pid"
    script.write_text(
        "import os, time\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "os.close(1), os.close(2)  # let go of the output pipe: only the signals can end it\n"
        "time.sleep(60)\n"
    )
    with pytest.raises(RuntimeError, match="timed out"):
        scaling.run_torchrun(script, 1, timeout_s=10)
    # The worker runs in a session of its own: the timeout must end it too.
    assert pid_file.exists(), "the worker never started; raise timeout_s"
    worker = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nproc": 0}, "nproc must be a positive integer"),
        ({"nproc": True}, "nproc must be a positive integer"),
        ({"nproc": 1, "threads": 0}, "threads must be a positive integer"),
        ({"nproc": 1, "timeout_s": 0}, "timeout_s must be a positive number"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, match):
    script = tmp_path / "x.py"
    script.write_text("")
    with pytest.raises(ValueError, match=match):
        scaling.run_torchrun(script, **kwargs)


def test_missing_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scaling.run_torchrun(tmp_path / "nope.py", 1)


def test_write_result_only_on_rank0(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    monkeypatch.delenv(scaling.RESULT_ENV, raising=False)
    assert scaling.write_result({"a": 1}) is False
    monkeypatch.setenv(scaling.RESULT_ENV, str(target))
    monkeypatch.setenv("RANK", "1")
    assert scaling.write_result({"a": 1}) is False and not target.exists()
    monkeypatch.setenv("RANK", "0")
    assert scaling.write_result({"a": 1}) is True
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(ValueError, match="result must be a mapping"):
        scaling.write_result([1, 2])
