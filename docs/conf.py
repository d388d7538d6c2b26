"""Sphinx configuration of the contrastlocal documentation.

Build (warnings are errors, as in CI)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The site is Markdown (MyST) pages, an API reference generated with autosummary from the
numpydoc docstrings, figures drawn at build time from the package's own mask builders
(matplotlib's ``plot`` directive), and a sphinx-gallery of small CPU examples (``examples/``).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import contrastlocal

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

# -- Project ------------------------------------------------------------------------------------
project = "contrastlocal"
author = "The contrastlocal developers"
copyright = "2025, The contrastlocal developers"
release = contrastlocal.__version__
version = ".".join(release.split(".")[:2])

# -- Extensions ---------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "sphinx_copybutton",
    "matplotlib.sphinxext.plot_directive",
]

# Intersphinx (links into the Python, NumPy and PyTorch docs) needs the network to fetch the
# projects' inventories. CI and the development machines have none, and an unreachable
# inventory is a warning, which `-W` turns into a failed build. So the links are opt-in: set
# CONTRASTLOCAL_INTERSPHINX=1 when building with network access (e.g. for publishing). The
# names that would resolve through it are listed in `nitpick_ignore_regex` below, so the
# offline build stays nitpicky for everything of our own.
if os.environ.get("CONTRASTLOCAL_INTERSPHINX") == "1":
    extensions.append("sphinx.ext.intersphinx")
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "numpy": ("https://numpy.org/doc/stable", None),
        "torch": ("https://docs.pytorch.org/docs/stable", None),
        "array-api": ("https://data-apis.org/array-api/latest", None),
    }

# The paper writes the labelled training set's size as |X_tr|; in a reST docstring that is a
# substitution reference, so define it to render as written.
rst_prolog = r"""
.. |X_tr| replace:: \|X_tr\|
"""

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints", "_ext"]
templates_path = ["_templates"]

# -- Nitpicky: every cross-reference of our own must resolve ------------------------------------
nitpicky = True
nitpick_ignore_regex = [
    # third-party and builtin names (resolvable only through intersphinx, see above)
    (
        "py:.*",
        r"(torch|numpy|np|jax|cupy|array_api_compat|array_api_strict|scipy|matplotlib)(\..*)?",
    ),
    ("py:.*", r"(collections\.abc|typing|typing_extensions|pathlib|os|argparse|dataclasses)\..*"),
    (
        "py:class",
        r"(int|float|bool|str|bytes|dict|list|tuple|set|object|type|None|Any|Callable"
        r"|Sequence|Mapping|Iterator|Iterable|Path|PathLike|Literal|Generator|Namespace"
        r"|Array|Reduction|optional|callable|array|array_like|iterable|sequence"
        r"|path-like|os\.PathLike|default|of)",
    ),
    ("py:class", r"nn\.Module|Module|Tensor|Dataset|DataLoader|Sampler|Generator"),
]


def _missing_subpackages() -> list[str]:
    """Sub-packages of contrastlocal that cannot be imported in this environment."""
    import importlib

    missing = []
    for name in ("functional", "nn", "samplers", "models", "data", "training", "cli"):
        try:
            module = importlib.import_module(f"contrastlocal.{name}")
        except ImportError:
            missing.append(name)
            continue
        if not hasattr(module, "__all__"):  # a bare directory (namespace package): not written yet
            missing.append(name)
    return missing


# A sub-package that cannot be imported (e.g. torch absent) cannot be documented; references to
# it are then not errors. In the full docs environment (`.[torch,medical,docs]`) this is empty.
MISSING_SUBPACKAGES = _missing_subpackages()
nitpick_ignore_regex += [
    ("py:.*", rf"contrastlocal\.{name}(\..*)?") for name in MISSING_SUBPACKAGES
]


# -- autodoc / autosummary / numpydoc -----------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
# Types are in the numpydoc "Parameters" lines (with shapes); repeating the annotations in the
# signature adds noise and unresolvable references to third-party types.
autodoc_typehints = "none"
autodoc_member_order = "bysource"
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# -- MyST ---------------------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# -- matplotlib plot directive (figures drawn from the real mask builders) ------------------------
plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"font.size": 9}
plot_pre_code = "import numpy as np\nimport matplotlib.pyplot as plt\n"

# -- sphinx-gallery -----------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    # Only the plot_* scripts belong to the gallery; the other scripts in examples/ (command-line
    # and training walkthroughs) are shown with literalinclude on the pipeline page.
    "ignore_pattern": r"^(?!plot_)",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "matplotlib_animations": False,
    "within_subsection_order": "FileNameSortKey",
    "min_reported_time": 10,
    # "Examples using X" lists on the API pages (minigallery in the autosummary templates)
    "doc_module": ("contrastlocal",),
    "backreferences_dir": "generated/backreferences",
    "reference_url": {"contrastlocal": None},
}

# -- HTML ---------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"contrastlocal {release}"
html_theme_options = {
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_static_path: list[str] = []
html_show_sourcelink = False

# Headless figure rendering; silence matplotlib's "non-interactive backend" chatter.
os.environ.setdefault("MPLBACKEND", "Agg")
warnings.filterwarnings("ignore", message="Matplotlib is currently using agg")
