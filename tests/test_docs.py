"""The docs site (`make docs`) and README.md: Sphinx builds the site from the notebooks and docs/ without a warning,
every notebook under nbs/ has its page, and README.md is what nbs/index.ipynb gives (`make readme`)."""
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from kronkers_ml.readme import readme_text

ROOT = Path(__file__).resolve().parents[1]


def _notebooks():
    return sorted(p for p in (ROOT / "nbs").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    "The site built as `make docs` builds it (warnings are errors), into a temporary folder; its html/ folder."
    out = tmp_path_factory.mktemp("docs")
    run = subprocess.run([sys.executable, "-m", "sphinx", "-M", "html", ".", str(out), "-c", "docs",
                          "-W", "--keep-going", "-q", "-j", "2"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, f"the docs build failed:\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return out / "html"


def test_every_notebook_and_page_has_its_page(site):
    assert (site / "nbs" / "index.html").is_file()
    assert 'url=nbs/index.html' in (site / "index.html").read_text()          # the site's root opens the index
    sources = _notebooks() + sorted((ROOT / "docs").glob("*.md"))
    assert len(sources) > 40
    missing = [str(p.relative_to(ROOT)) for p in sources
               if not (site / p.relative_to(ROOT).with_suffix(".html")).is_file()]
    assert not missing, f"no page for {missing}"


def test_reference_and_pipeline_pages_list_every_notebook(site):
    reference = (site / "docs" / "reference.html").read_text()
    pipeline = (site / "docs" / "pipeline.html").read_text()
    for nb in _notebooks():
        rel = nb.relative_to(ROOT / "nbs").with_suffix(".html").as_posix()
        if rel == "index.html":
            continue
        page = pipeline if rel.startswith("pipeline/") else reference
        assert f'href="../nbs/{rel}"' in page, f"{rel} is not in the table of contents of its section"


def test_a_notebook_without_a_group_is_named(tmp_path):
    conf = runpy.run_path(str(ROOT / "docs" / "conf.py"))
    for name in ["00_core", "02_cli", "platform/02_registry", "pipeline/returns/train_returns", "index", "service_time/01_geofence"]:
        (tmp_path / name).with_suffix(".ipynb").parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).with_suffix(".ipynb").write_text("{}")
    toc = conf["reference_toctrees"](tmp_path)
    assert "/nbs/service_time/01_geofence" in toc and "/nbs/platform/02_registry" in toc and "/nbs/02_cli" in toc
    assert "pipeline" not in toc
    assert "index" not in toc
    assert conf["ungrouped"](tmp_path) == []
    (tmp_path / "new_family").mkdir(); (tmp_path / "new_family" / "01_data.ipynb").write_text("{}")
    assert conf["ungrouped"](tmp_path) == [] and ":caption: New family" in conf["reference_toctrees"](tmp_path)
    (tmp_path / "77_unknown.ipynb").write_text("{}")
    assert conf["ungrouped"](tmp_path) == ["nbs/77_unknown"]       # the build warns, naming it, and -W fails it
    toc = conf["reference_toctrees"](tmp_path)
    assert toc.index(":caption: Other library notebooks") < toc.index("/nbs/77_unknown")


def test_pages_leave_out_nbdev_directives():
    import json
    conf = runpy.run_path(str(ROOT / "docs" / "conf.py"))
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": ["#| default_exp core"]},
                    {"cell_type": "code", "metadata": {}, "source": ["#| export\n", "x = 1"]},
                    {"cell_type": "code", "metadata": {}, "source": "#| hide\nfrom fastcore.test import test_eq"},
                    {"cell_type": "markdown", "metadata": {}, "source": "#| not code: kept"}]}
    cells = json.loads(conf["nbdev_for_the_page"](json.dumps(nb)))["cells"]
    assert [c.get("metadata", {}).get("tags") for c in cells] == [["remove-cell"], None, ["remove-cell"], None]
    assert cells[1]["source"] == "x = 1" and cells[3]["source"] == "#| not code: kept"


def test_readme_is_the_index_notebook():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme == readme_text(ROOT / "nbs" / "index.ipynb", ROOT / "README.md"), \
        "README.md differs from nbs/index.ipynb: edit the notebook, then `make readme`"
    assert len(readme.splitlines()) <= 200


def test_readme_links_and_documented_variables():
    "Every relative link of README.md reaches a file; every environment variable the code reads is documented."
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", readme) if not re.match(r"[a-z]+:|#", t)]
    assert targets and not [t for t in targets if not (ROOT / t).exists()]
    documented = readme + "".join(p.read_text(encoding="utf-8") for p in (ROOT / "docs").glob("*.md"))
    code = "".join(p.read_text(encoding="utf-8") for p in [*(ROOT / "kronkers_ml").glob("*.py"),
                                                           *(ROOT / "deploy").rglob("*") ] if p.is_file())
    names = set(re.findall(r"\b(KRONKERS_[A-Z0-9_]*[A-Z0-9]|RETURNS_INBOX|RETURNS_RESULTS|MLFLOW_TRACKING_URI)\b", code))
    assert "KRONKERS_STATE_DIR" in names
    assert not sorted(n for n in names if n not in documented), "undocumented environment variables"
