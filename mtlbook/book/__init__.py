"""The chapters' own experiment drivers: one module per chapter, not public API.

Each module holds the studies of one chapter of the book (``ch12_3_2`` for 12.3.2, soft
parameter sharing; ``appendix_a`` for the real data sets): the sweeps, restarts and tables
that chapter shows, built on the library (:mod:`mtlbook.analysis`, :mod:`mtlbook.training`,
:mod:`mtlbook.models`, ...). The library never imports this package (a test checks it), and its
functions may change with the chapters; import them to re-run or vary a chapter's
experiments, not as building blocks of your own code. :mod:`mtlbook.book.evidence` ties the
chapters' prose to their outputs (numbers glued into the text, claims checked by the build).
"""

__all__: list[str] = []  # a package of chapter modules: import them by name
