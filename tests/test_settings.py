"""One home for each setting: env.yaml holds a run's values, each pipeline step's settings object their keys, types and
defaults (docs/settings.md). These tests fail when the two drift apart, when a parameters cell grows a second default,
and when a bad value is not stopped with the key's name."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from kronkers_ml.monitoring.monitor import THRESHOLD_DEFAULTS, read_env
from kronkers_ml.settings import Settings, load_env, settings_class

ROOT = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((ROOT / "pipeline.yaml").read_text())
STEPS = {t["name"]: t for t in SPEC["tasks"] if isinstance(t.get("params", {}).get("env"), dict)}


def _lookup(env: dict, key: str):
    node = env
    for part in key.split("."):
        node = node[part]
    return node


def _relative(value, env_file: Path):
    "env.yaml writes paths as '{{here}}/x'; the objects' defaults as 'x' (relative to the project)."
    here = str(env_file.resolve().parent) + "/"
    return value[len(here):] if isinstance(value, str) and value.startswith(here) else value


def test_pipeline_passes_settings_objects():
    assert len(STEPS) >= 18, sorted(STEPS)
    for name, task in STEPS.items():
        spec = task["params"]["env"]
        assert spec["dotted_path"] == "kronkers_ml.settings::step_params", name
        cls = settings_class(spec["step"])
        sections = {k.split(".")[0] for k in cls.keys().values()}
        given = set(spec) - {"dotted_path", "step"}
        assert sections == given, f"{name}: {cls.__name__} reads {sorted(sections)}, pipeline.yaml gives {sorted(given)}"
        assert all(spec[s] == f"{{{{{s}}}}}" for s in given), f"{name}: pass whole sections ('{{{{returns}}}}')"


@pytest.mark.parametrize("name", sorted(STEPS))
def test_env_yaml_is_the_objects_defaults(name):
    "env.yaml (the default run) holds each step's defaults: one value, checked, not two homes that drift."
    cls = settings_class(STEPS[name]["params"]["env"]["step"])
    env = load_env(ROOT / "env.yaml")
    defaults = cls()
    for field, key in cls.keys().items():
        value = _relative(getattr(cls.from_env(env), field), ROOT / "env.yaml")
        assert value == getattr(defaults, field), f"{key}: env.yaml has {value!r}, {cls.__name__} defaults to {getattr(defaults, field)!r}"


@pytest.mark.parametrize("name", sorted(STEPS))
def test_tiny_run_has_every_key_and_converts(name):
    cls = settings_class(STEPS[name]["params"]["env"]["step"])
    settings = cls.from_env(load_env(ROOT / "env.test.yaml"))
    assert isinstance(settings, Settings)
    json.dumps(settings.as_params())      # what the task's metadata stores must be JSON


def test_env_files_have_the_same_keys():
    keys = lambda d, p="": {k for key, v in d.items() for k in ([f"{p}{key}"] + (sorted(keys(v, f"{p}{key}.")) if isinstance(v, dict) else []))}
    default, tiny = (keys(yaml.safe_load((ROOT / f).read_text())) for f in ("env.yaml", "env.test.yaml"))
    assert default == tiny, f"only in env.yaml: {sorted(default - tiny)}; only in env.test.yaml: {sorted(tiny - default)}"


@pytest.mark.parametrize("name", sorted(STEPS))
def test_parameters_cell_holds_no_second_default(name):
    nb = json.loads((ROOT / STEPS[name]["source"]).read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    lines = "".join(cell["source"]).splitlines()
    names = {line.split("<-" if "<-" in line else "=")[0].strip() for line in lines if "=" in line or "<-" in line}   # Python or R
    cls = settings_class(STEPS[name]["params"]["env"]["step"])
    assert "env" in names, f"{name}: the parameters cell must declare env = None"
    assert not names & set(cls.keys()), f"{name}: {sorted(names & set(cls.keys()))} have a second default in the parameters cell"
    plain = set(STEPS[name]["params"]) - {"env", "resources_"}
    assert plain <= names, f"{name}: params {sorted(plain - names)} are not declared in the parameters cell"


def test_monitor_reads_env_through_the_pipelines_loader():
    env = read_env(ROOT / "env.test.yaml")
    loaded = load_env(ROOT / "env.test.yaml")
    assert env["out"] == loaded["out"] == str(ROOT / "outputs-test")
    assert env["monitoring"]["quality"] == str(ROOT / "config" / "quality.yaml")
    assert {k: env["monitoring"][k] for k in loaded["monitoring"]} == loaded["monitoring"]


def test_monitor_defaults_are_env_yaml():
    monitoring = load_env(ROOT / "env.yaml")["monitoring"]
    shared = set(THRESHOLD_DEFAULTS) & set(monitoring) - {"config"}
    assert shared
    for key in shared:
        assert THRESHOLD_DEFAULTS[key] == monitoring[key], f"monitoring.{key}: env.yaml {monitoring[key]!r}, monitor {THRESHOLD_DEFAULTS[key]!r}"


def test_bad_value_stops_the_build_naming_the_key(tmp_path):
    "A value that is not of its setting's type stops `ploomber build` while it loads the pipeline, before any task runs."
    env = {**os.environ, "PLOOMBER_ENV_FILENAME": "env.test.yaml", "PLOOMBER_STATS_ENABLED": "false",
           "PLOOMBER_VERSION_CHECK_DISABLED": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([str(ROOT / ".venv" / "bin" / "ploomber"), "build", "--entry-point", "pipeline.yaml",
                           "--env--out", str(tmp_path / "out"), "--env--returns--lr", "abc"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "returns.lr: expected a number, got 'abc'" in done.stdout + done.stderr
    assert not (tmp_path / "out" / "returns").exists()
