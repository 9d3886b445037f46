"""Sphinx configuration: MyST Markdown pages, built with warnings as errors in CI.

Build: ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

from __future__ import annotations

project = "pytest-neuron"
author = "pytest-neuron developers"
copyright = "pytest-neuron developers"
extensions = ["myst_parser"]
# deflist: the "Term\n: definition" lists of the concepts page.
myst_enable_extensions = ["deflist"]
source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "samples", "Thumbs.db", ".DS_Store"]  # samples/: suites of check_samples.py
html_theme = "furo"
html_title = "pytest-neuron"
# Headings up to ### get anchors, so pages can link to [a section](#a-section).
# A link to a missing page or anchor is a warning, so it fails the -W build.
myst_heading_anchors = 3
html_static_path = ["_static"]  # the example timeline (HTML, JSON, PNG) ships with the docs
html_css_files = ["tables.css"]  # wrap wide table cells (the configuration tables)
