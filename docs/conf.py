"""Sphinx configuration: MyST Markdown pages, built with warnings as errors in CI."""

from __future__ import annotations

project = "pytest-neuron"
author = "pytest-neuron developers"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]
html_theme = "furo"
myst_heading_anchors = 3
suppress_warnings = ["myst.xref_missing"]
