"""Sphinx configuration: Markdown pages (MyST), API reference from docstrings, doctests.

Build with warnings as errors, as ``make docs`` does::

    sphinx-build -W --keep-going -b html docs docs/_build/html
    sphinx-build -W --keep-going -b doctest docs docs/_build/doctest
"""

import sys
from pathlib import Path

import forksafe_logging

sys.path.insert(0, str(Path(__file__).parent / "_ext"))

project = "forksafe_logging"
author = "the forksafe_logging authors"
copyright = "the forksafe_logging authors"
release = forksafe_logging.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    # The examples in the pages are doctests, run by `-b doctest` inside the
    # sphinx-build process. Some of them fork: every child leaves through
    # os._exit(), or it would go on running Sphinx, and every page ends with
    # uninstall(), so no page sees another's settings.
    "sphinx.ext.doctest",
    "sphinx.ext.napoleon",
    "benchplot",  # draws _generated/throughput.svg from benchmarks.json
    "doctorrun",  # writes _generated/doctor-article.txt: the doctor on the article's program
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_ext"]

# Links such as [Forwarding](how-it-works.md#forwarding) may point at headings.
myst_heading_anchors = 3

# The docstrings are Google style.
napoleon_google_docstring = True
napoleon_numpy_docstring = False

autodoc_member_order = "bysource"
autodoc_typehints = "signature"

html_theme = "alabaster"
html_title = "forksafe_logging %s" % release
html_theme_options = {
    "description": "Make the standard logging module safe across processes.",
    "fixed_sidebar": True,
}
