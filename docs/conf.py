"""Sphinx configuration of the docs site (`make docs`): the notebooks under nbs/ and the pages under docs/.

The source folder is the repository root (`sphinx-build -M html . _docs -c docs`, the site in _docs/html/), so that a notebook's page sits at the
notebook's own path (`nbs/platform/02_registry.ipynb` -> `nbs/platform/02_registry.html`) and links between notebooks and pages work
the same on the site, in the checkout and in README.md. Notebooks are committed without outputs and are never
executed here: the build reads them as they are and downloads nothing.
"""
import json
from pathlib import Path
import re

ROOT = Path(__file__).resolve().parents[1]

project = "Kronkers ML workbench"
author = "Kronkers data science"
copyright = "2026 onwards, Kronkers"

extensions = ["myst_nb"]
root_doc = "nbs/index"
# Only the notebooks and the pages are sources; everything else in the checkout is pruned before Sphinx walks it.
include_patterns = ["nbs/**", "docs/**"]
exclude_patterns = [
    ".*", "**/.ipynb_checkpoints", "_docs", "_proc", "kronkers_ml", "outputs", "outputs-*", "state", "logs",
    "reports", "tests", "benchmarks", "deploy", "config", "README.md", "docs/_extra",
]

nb_execution_mode = "off"          # notebooks are committed without outputs; never run them while building
nb_merge_streams = True
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3           # `[x](page.md#a-heading)` links resolve to the heading
suppress_warnings = [
    # A few library notebooks go from their title (H1) straight to H3 sections (monitoring/02_quality); the pages read well
    # and the notebooks are not rewritten for the site, so MyST's warning for each skipped level is off.
    "myst.header",
]

html_theme = "furo"
html_title = "Kronkers ML workbench"
html_extra_path = ["_extra"]       # index.html at the site's root, pointing at the index page
html_show_sourcelink = False


# The API reference: every library notebook under nbs/ (not nbs/pipeline/, not index), grouped by family and layer.
# A notebook is placed by its folder when it has one (nbs/service_time/...; a folder GROUPS does not name, such as a new
# model family's, is a group of its own), else by its module name. A top-level notebook that fits no group is listed
# under OTHER with a warning naming it, which fails `make docs` (-W): add it to GROUPS.
OTHER = "Other library notebooks"
GROUPS = [
    ("Service time", ["service_time"], []),
    ("Demand", ["demand"], []),
    ("Returns", ["returns"], []),
    ("Platform: tracking, registry, access, the web API, command line", ["platform"], ["cli"]),
    ("Monitoring", ["monitoring"], []),
    ("Dashboards", ["pages"], []),
    ("Operations", ["operations"], []),
    ("Core", [], ["core", "metrics", "readme", "moved", "families", "settings", "products"]),
]


def _module(name):
    "`02_registry` -> `registry`: the notebook's name without its number prefix."
    return re.sub(r"^\d+[a-z]?_", "", name)


def library_notebooks(nbs=ROOT / "nbs"):
    "Docnames (`nbs/...`, no suffix) of the library notebooks under `nbs` (not pipeline/, not index), sorted."
    nbs = Path(nbs)
    found = []
    for p in sorted(nbs.rglob("*.ipynb")):
        rel = p.relative_to(nbs)
        if rel.parts[0] == "pipeline" or any(x.startswith((".", "_")) for x in rel.parts) or rel == Path("index.ipynb"):
            continue
        found.append(("nbs" / rel.with_suffix("")).as_posix())
    return found


def folder_title(folder):
    "`service_time` -> `Service time`: the group of a folder that GROUPS does not name (a new model family)."
    return folder.replace("_", " ").capitalize()


def group_of(docname):
    "The GROUPS title a library notebook belongs to (a folder GROUPS does not name is a group of its own), or None."
    parts = docname.split("/")[1:]       # drop "nbs"
    for title, folders, modules in GROUPS:
        if len(parts) > 1 and parts[0] in folders:
            return title
    if len(parts) > 1:
        return folder_title(parts[0])
    for title, folders, modules in GROUPS:
        if _module(parts[-1]) in modules:
            return title
    return None


def ungrouped(nbs=ROOT / "nbs"):
    "Library notebooks that fit no group of GROUPS."
    return [d for d in library_notebooks(nbs) if group_of(d) is None]


def reference_toctrees(nbs=ROOT / "nbs"):
    "MyST toctrees of the library notebooks, one per group, and a last one for any notebook that fits no group."
    docs = library_notebooks(nbs)
    out = []
    titles = [g[0] for g in GROUPS]
    titles += sorted({group_of(d) for d in docs} - set(titles) - {None}) + [OTHER]
    for title in titles:
        members = [d for d in docs if (group_of(d) or OTHER) == title]
        if members:
            out += ["```{toctree}", f":caption: {title}", ":maxdepth: 1", ""]
            out += [f"/{d}" for d in members] + ["```", ""]
    return "\n".join(out)


def nbdev_for_the_page(text: str) -> str:
    "A notebook's JSON as its page shows it, as nbdev's own docs do: `#| hide` and `#| default_exp` cells left out, other `#|` lines dropped."
    nb = json.loads(text)
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        lines = src.split("\n")
        flags = [l[2:].strip() for l in lines if l.startswith("#|")]
        if any(f.split()[:1] in (["hide"], ["default_exp"]) for f in flags):
            cell.setdefault("metadata", {}).setdefault("tags", []).append("remove-cell")
        cell["source"] = "\n".join(l for l in lines if not l.startswith("#|")).strip("\n")
    return json.dumps(nb)


def _on_source(app, docname, source):
    if docname == "docs/reference":
        source[0] = source[0].replace("<!-- library notebooks -->", app.config.kronkers_reference)
    elif app.env.doc2path(docname).suffix == ".ipynb":
        source[0] = nbdev_for_the_page(source[0])


def _check_groups(app, config):
    "Place every library notebook before anything is read; warn, naming it, about one that fits no group."
    from sphinx.util import logging
    for d in ungrouped():
        logging.getLogger(__name__).warning(
            f"{d}: no API reference group fits this notebook (listed under {OTHER!r}): add it to GROUPS in docs/conf.py",
            type="kronkers", subtype="toc")
    config.kronkers_reference = reference_toctrees()


def setup(app):
    app.add_config_value("kronkers_reference", "", "env")
    app.connect("config-inited", _check_groups)
    app.connect("source-read", _on_source)
