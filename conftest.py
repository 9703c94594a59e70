"""Settings shared by every pytest run in this repository.

Unit tests draw figures with matplotlib's non-GUI Agg backend, so they run on machines
without a display and never open windows. The backend is chosen here, in the pytest
process only, and deliberately not through the MPLBACKEND environment variable: notebook
kernels started by nbmake inherit the environment, and ipykernel switches to its inline
backend (the one that stores figures in the executed notebook) only when MPLBACKEND is
unset.

The tests draw the book's figures as the chapters do, after
:func:`mtlbook.book.page.setup_page`: Chinese labels in Noto Sans CJK SC, and a glyph that no
font has is an error, so a test that draws a figure also checks its labels can be drawn.
"""

import matplotlib


def pytest_configure(config):
    matplotlib.use("Agg")
    from mtlbook.book.page import setup_page

    setup_page()
