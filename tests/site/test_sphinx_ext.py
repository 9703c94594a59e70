"""The book's Sphinx extensions in _ext/: cross-references, glossary search terms, scripts.

The cross-reference test builds a one-page Sphinx project in a temporary folder (a few
seconds): names the way users write them resolve, other packages' names become plain text,
and a name that does not exist still fails the strict build.
"""

from __future__ import annotations

import io
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "_ext"))

import mtlbook_site  # noqa: E402
import mtlbook_xref  # noqa: E402


def build(tmp_path: Path, body: str) -> tuple[str, str]:
    """Build index.rst (``body``) with autodoc, napoleon and the resolver; (html, warnings)."""
    from sphinx.application import Sphinx

    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text("", encoding="utf-8")
    (src / "index.rst").write_text(textwrap.dedent(body), encoding="utf-8")
    warnings = io.StringIO()
    app = Sphinx(
        srcdir=str(src),
        confdir=None,
        outdir=str(tmp_path / "out"),
        doctreedir=str(tmp_path / "doctrees"),
        buildername="html",
        status=None,
        warning=warnings,
        freshenv=True,
        confoverrides={
            "extensions": ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "mtlbook_xref"],
            "nitpicky": True,
            "html_theme": "basic",
        },
    )
    app.build()
    # Only the warnings about this page (the docstrings of fit() name pages not built here).
    ours = "\n".join(line for line in warnings.getvalue().splitlines() if "index.rst" in line)
    return (tmp_path / "out" / "index.html").read_text(encoding="utf-8"), ours


def test_names_resolve_like_python(tmp_path) -> None:
    html, warnings = build(
        tmp_path,
        """
        Test
        ====

        .. automodule:: mtlbook.training.loop
           :members: fit, FitResult

        .. autoexception:: mtlbook.training.checkpoint.CheckpointError

        .. py:module:: mtlbook.analysis.compare

        .. py:function:: probe()

           Re-exported: :func:`mtlbook.fit`. Imported here: :class:`MultiTaskData` is not
           documented on this page. Attribute of a re-export:
           :attr:`mtlbook.training.FitResult.history`. Other packages: :class:`pd.DataFrame`,
           :class:`torch.Tensor`,
           :class:`collections.abc.Mapping`.
        """,
    )
    assert 'href="#mtlbook.training.loop.fit"' in html
    assert 'href="#mtlbook.training.loop.FitResult.history"' in html
    # Another package: shown as code, linked nowhere, no warning.
    assert "pd.DataFrame" in html and "torch.Tensor" in html
    assert "pd.DataFrame" not in warnings and "torch.Tensor" not in warnings
    # A real mtlbook object that no page documents: still a warning.
    assert "MultiTaskData" in warnings
    assert warnings.count("reference target not found") == 1, warnings


def test_a_misspelt_name_still_fails(tmp_path) -> None:
    _, warnings = build(
        tmp_path,
        """
        Test
        ====

        .. automodule:: mtlbook.training.loop
           :members: fit

        .. py:function:: probe()

           See :func:`mtlbook.fitt` and :class:`pandas.DataFrme`.
        """,
    )
    assert "mtlbook.fitt" in warnings
    assert "pandas.DataFrme" in warnings


def test_names_imported_for_type_checking_only_resolve(tmp_path) -> None:
    """``plot_seesaw`` returns ``Figure | SubFigure``, both imported under TYPE_CHECKING:
    Python cannot find them in the module, the resolver reads its TYPE_CHECKING block."""
    assert mtlbook_xref._type_checking_imports("mtlbook.analysis.seesaw")["SubFigure"] == (
        "matplotlib.figure.SubFigure"
    )
    # Relative imports come back absolute.
    assert mtlbook_xref._type_checking_imports("mtlbook.models.reach") == {
        "MultiTaskModel": "mtlbook.models.base.MultiTaskModel"
    }
    html, warnings = build(
        tmp_path,
        """
        Test
        ====

        .. autofunction:: mtlbook.analysis.seesaw.plot_seesaw
        """,
    )
    assert "SubFigure" in html
    assert warnings == "", warnings


def test_contexts_go_from_the_class_outwards() -> None:
    assert mtlbook_xref._contexts("mtlbook.models.mmoe", "MMoE") == [
        "mtlbook.models.mmoe.MMoE",
        "mtlbook.models.mmoe",
        "mtlbook.models",
        "mtlbook",
        None,
    ]
    assert mtlbook_xref._contexts(None, None) == [None]


def test_glossary_terms(tmp_path) -> None:
    glossary = tmp_path / "glossary.md"
    glossary.write_text(
        textwrap.dedent("""\
        | 中文 | English |
        |---|---|
        | 负迁移 | negative transfer |
        | 购买（转化） | purchase |
        | 训练集 / 验证集 | train / valid |
        | AUC | area under the curve |
        not a table | 跳过 |
        """),
        encoding="utf-8",
    )
    assert mtlbook_site.glossary_terms(glossary) == ["负迁移", "购买", "转化", "训练集", "验证集"]


def test_inline_scripts_are_kept_once() -> None:
    from sphinx.builders.html._assets import _JavaScript

    body = {"body": "const X = 1"}
    scripts = [
        _JavaScript("_static/a.js"),
        _JavaScript(None, **body),
        _JavaScript("", **body),
        _JavaScript("_static/a.js"),
    ]
    context = {"script_files": scripts}
    mtlbook_site.dedupe_scripts(None, "page", "page.html", context, None)
    assert [(s.filename, s.attributes) for s in context["script_files"]] == [
        ("_static/a.js", {}),
        (None, body),
    ]


@pytest.mark.parametrize("target", ["One row per task", ""])
def test_prose_is_not_a_name(target) -> None:
    node = {"refdomain": "py", "reftarget": target}
    assert mtlbook_xref.on_missing_reference(None, None, node, None) is None
