from __future__ import annotations

import errno
import fcntl
import json
import multiprocessing
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from ml import sources
from ml.config import Settings, load_settings
from ml.errors import ConfigError, RecipeError
from ml.recipe import Recipe, recipe_from_dict
from ml.sources import (
    GENERATED,
    HEADER,
    check_writable,
    current_table_name,
    declaration,
    ensure_declared,
)

LABEL = str(GENERATED)


def _recipe(name: str, description: str = "") -> Recipe:
    return recipe_from_dict(
        {
            "name": name,
            "description": description,
            "data": {
                "train_model": "train_uplift",
                "score_model": "score_uplift",
                "entity_keys": ["customer_id"],
                "target": "converted",
                "treatment": "treatment",
            },
            "context": {"campaign_id": {"type": "str", "default": "cmp"}},
            "model": {"class_path": "xgboost.XGBClassifier"},
        }
    )


@pytest.fixture
def settings(project: Path) -> Settings:
    """Settings whose dbt project is the temp copy: the generated file lands under it."""
    return load_settings(root=project)


@pytest.fixture
def generated(project: Path) -> Path:
    return project / GENERATED


def _doc(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _tables(path: Path) -> set[str]:
    doc = _doc(path)
    source = next(s for s in doc["sources"] if s["name"] == "predictions")
    return {t["name"] for t in source["tables"]}


def _exposures(path: Path) -> set[str]:
    return {e["name"] for e in _doc(path)["exposures"]}


def _one_line_error(exc: pytest.ExceptionInfo[BaseException], starts: str) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.startswith(starts), message
    return message


# -- the bug: a recipe not yet in the file ------------------------------------------------------


def test_new_recipe_is_added_to_an_existing_file(
    settings: Settings, generated: Path, root: Path
) -> None:
    generated.parent.mkdir(parents=True)
    shutil.copy(root / GENERATED, generated)  # the committed file, declaring another recipe
    before = _tables(generated)

    assert ensure_declared(settings, _recipe("brand_new")) is True

    assert _tables(generated) == before | {"brand_new", "brand_new__current"}
    assert "brand_new" in _exposures(generated)
    assert generated.read_text().startswith(HEADER)


def test_first_recipe_creates_the_file(settings: Settings, generated: Path) -> None:
    assert not generated.exists()
    assert ensure_declared(settings, _recipe("first")) is True
    doc = _doc(generated)
    assert doc["version"] == 2
    assert [s["name"] for s in doc["sources"]] == ["predictions"]
    assert _tables(generated) == {"first", "first__current"}


def test_redeclaring_is_idempotent(settings: Settings, generated: Path) -> None:
    recipe = _recipe("again", "Same each time.")
    assert ensure_declared(settings, recipe) is True
    text, mtime = generated.read_text(), generated.stat().st_mtime_ns
    assert ensure_declared(settings, recipe) is False
    assert generated.read_text() == text and generated.stat().st_mtime_ns == mtime


def test_changed_recipe_overwrites_its_entry(settings: Settings, generated: Path) -> None:
    ensure_declared(settings, _recipe("evolving", "First."))
    assert ensure_declared(settings, _recipe("evolving", "Second.")) is True
    source = _doc(generated)["sources"][0]
    assert [t["name"] for t in source["tables"]] == ["evolving", "evolving__current"]
    assert all(t["description"].endswith("Second.") for t in source["tables"])


def test_hand_edited_entries_are_kept(settings: Settings, generated: Path) -> None:
    generated.parent.mkdir(parents=True)
    generated.write_text(
        "version: 2\n"
        "sources:\n"
        "- name: crm\n"
        "  schema: crm\n"
        "  tables:\n"
        "  - name: contacts\n"
        "- name: predictions\n"
        "  schema: custom_schema\n"
        "  tables:\n"
        "  - name: manual_scores\n"
        "    description: Written by hand.\n"
        "exposures:\n"
        "- name: dashboard\n"
        "  type: dashboard\n"
        "  owner: {name: bi}\n"
        "models:\n"
        "- name: some_model\n"
        "  description: dbt accepts any properties here; ml passes them through.\n"
    )
    assert ensure_declared(settings, _recipe("added")) is True
    doc = _doc(generated)
    crm, predictions = doc["sources"]
    assert crm == {"name": "crm", "schema": "crm", "tables": [{"name": "contacts"}]}
    assert predictions["schema"] == "custom_schema"
    assert [t["name"] for t in predictions["tables"]] == [
        "added",
        "added__current",
        "manual_scores",
    ]
    assert predictions["tables"][2] == {"name": "manual_scores", "description": "Written by hand."}
    assert [e["name"] for e in doc["exposures"]] == ["added", "dashboard"]
    assert doc["models"] == [
        {
            "name": "some_model",
            "description": "dbt accepts any properties here; ml passes them through.",
        }
    ]


def test_file_mode_is_kept(settings: Settings, generated: Path) -> None:
    ensure_declared(settings, _recipe("one"))
    generated.chmod(0o640)
    assert ensure_declared(settings, _recipe("two")) is True
    assert generated.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in generated.parent.iterdir()) == [
        f".{generated.name}.lock",
        generated.name,
    ]  # no temp file left behind


# -- the declaration itself ---------------------------------------------------------------------


def test_current_table_is_unique_per_entity_and_context() -> None:
    tables, exposure = declaration(_recipe("uplift"))
    history, current = tables
    assert history["name"] == "uplift"
    assert current["name"] == current_table_name("uplift") == "uplift__current"
    assert history["columns"] == current["columns"]
    assert [c["name"] for c in current["columns"]] == [
        "customer_id",
        "campaign_id",
        "score",
        "model_name",
        "model_version",
        "run_id",
        "scored_at",
    ]

    def unique(table: dict) -> list[str]:
        return table["data_tests"][0]["unique_combination"]["arguments"]["columns"]

    assert unique(history) == ["customer_id", "campaign_id", "run_id"]
    assert unique(current) == ["customer_id", "campaign_id"]
    assert exposure["depends_on"] == [
        "ref('train_uplift')",
        "ref('score_uplift')",
        "source('predictions', 'uplift')",
        "source('predictions', 'uplift__current')",
    ]


def test_current_table_can_be_left_out(settings: Settings, generated: Path) -> None:
    tables, exposure = declaration(_recipe("uplift"), current=False)
    assert [t["name"] for t in tables] == ["uplift"]
    assert "source('predictions', 'uplift__current')" not in exposure["depends_on"]
    assert ensure_declared(settings, _recipe("uplift"), current=False) is True
    assert _tables(generated) == {"uplift"}


def test_written_yaml_has_no_aliases(settings: Settings, generated: Path) -> None:
    ensure_declared(settings, _recipe("plain"))
    assert "&id" not in generated.read_text() and "*id" not in generated.read_text()


def test_names_ending_in_current_are_reserved(settings: Settings, generated: Path) -> None:
    with pytest.raises(RecipeError, match="name: must not end in '__current'"):
        _recipe("uplift__current")  # the recipe refuses it; sources refuse it too:
    recipe = _recipe("uplift").model_copy(update={"name": "uplift__current"})
    for call in (check_writable, ensure_declared):
        with pytest.raises(RecipeError) as exc:
            call(settings, recipe)
        _one_line_error(exc, "recipe uplift__current: names ending in '__current' are reserved")
    assert not generated.exists()


# -- checked before scoring: a file ml cannot update fails in one line --------------------------


def test_check_writable_passes_and_names_the_file(settings: Settings, generated: Path) -> None:
    file = check_writable(settings, _recipe("fine"))
    assert file.path == generated and file.label == LABEL
    assert not generated.exists()  # checking writes nothing but the lock file


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ("- a\n- b\n", "expected a mapping at the top level, got list"),
        ("just text\n", "expected a mapping at the top level, got str 'just text'"),
        ("sources: 3\n", "sources: expected a list of mappings (got int 3)"),
        ("sources:\n- 3\n", "sources.0: expected a mapping (got int 3)"),
        ("sources:\n- tables: []\n", "sources.0.name: expected a name (required key is missing)"),
        (
            "sources:\n- name: predictions\n  tables: {a: 1}\n",
            "sources.0.tables: expected a list of mappings (got dict)",
        ),
        (
            "sources:\n- name: predictions\n  tables:\n  - name: 7\n",
            "sources.0.tables.0.name: expected a name (got int 7)",
        ),
        ("exposures: [x]\n", "exposures.0: expected a mapping (got str 'x')"),
        ("version: 3\n", "version: expected 2 (got int 3)"),
        ("sources: [\n", "YAML syntax error at line 2"),
    ],
)
def test_unexpected_file_fails_in_one_line(
    settings: Settings, generated: Path, content: str, field: str
) -> None:
    generated.parent.mkdir(parents=True)
    generated.write_text(content)
    for call in (check_writable, ensure_declared):
        with pytest.raises(ConfigError) as exc:
            call(settings, _recipe("any"))
        assert field in _one_line_error(exc, f"{LABEL}: ")
    assert generated.read_text() == content


def test_folder_that_cannot_exist_fails_in_one_line(project: Path, settings: Settings) -> None:
    # models/ is a regular file, so models/predictions cannot be created, even by root
    (project / "models").write_text("not a folder\n")
    for call in (check_writable, ensure_declared):
        with pytest.raises(ConfigError) as exc:
            call(settings, _recipe("any"))
        assert "cannot create the folder (Not a directory)" in _one_line_error(
            exc, "models/predictions: "
        )


def test_file_that_is_a_folder_fails_in_one_line(settings: Settings, generated: Path) -> None:
    generated.mkdir(parents=True)
    with pytest.raises(ConfigError) as exc:
        check_writable(settings, _recipe("any"))
    assert _one_line_error(exc, LABEL) == f"{LABEL}: exists but is not a regular file"


def test_read_only_file_system_fails_in_one_line(
    settings: Settings, generated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A read-only mount refuses root too; os.open stands in for one, for this folder only.
    real_open = os.open

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if Path(path).parent == generated.parent and flags & os.O_CREAT:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    generated.parent.mkdir(parents=True)
    monkeypatch.setattr(os, "open", open_)
    with pytest.raises(ConfigError) as exc:
        check_writable(settings, _recipe("any"))
    assert _one_line_error(exc, "models/predictions: ") == (
        "models/predictions: cannot write in this folder (Read-only file system); "
        "ml score updates _prediction_sources.yml there"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_folder_fails_in_one_line(settings: Settings, generated: Path) -> None:
    generated.parent.mkdir(parents=True)
    generated.parent.chmod(0o555)
    try:
        with pytest.raises(ConfigError) as exc:
            check_writable(settings, _recipe("any"))
        assert "cannot write in this folder (Permission denied)" in _one_line_error(
            exc, "models/predictions: "
        )
    finally:
        generated.parent.chmod(0o755)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits")
def test_read_only_file_fails_in_one_line(settings: Settings, generated: Path) -> None:
    ensure_declared(settings, _recipe("one"))
    generated.chmod(0o444)
    with pytest.raises(ConfigError) as exc:
        check_writable(settings, _recipe("two"))
    assert _one_line_error(exc, LABEL) == f"{LABEL}: the file is read-only (ml score rewrites it)"


# -- concurrency --------------------------------------------------------------------------------


def test_lock_held_too_long_fails_in_one_line(
    settings: Settings, generated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "LOCK_TIMEOUT_SECONDS", 0.2)
    file = check_writable(settings, _recipe("any"))
    with open(file.lock_path, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ConfigError) as exc:
            ensure_declared(settings, _recipe("any"))
    assert "still locked by another `ml score` after 0.2s" in _one_line_error(exc, LABEL)
    assert not generated.exists()
    assert ensure_declared(settings, _recipe("any")) is True  # released with the file


RECIPES_PER_PROCESS, WRITES_PER_PROCESS = 2, 20


def _declare_many(root: str, prefix: str, start: Any) -> None:
    """Child process: 20 writes, cycling over recipes of its own with a new description each."""
    settings = load_settings(root=Path(root))
    start.wait(timeout=60)
    for i in range(WRITES_PER_PROCESS):
        recipe = _recipe(f"{prefix}_{i % RECIPES_PER_PROCESS}", f"Pass {i}.")
        assert ensure_declared(settings, recipe) is True


def test_concurrent_runs_keep_each_others_declarations(project: Path, generated: Path) -> None:
    # Without the lock and the re-read, a run rewrites the file from a copy read before the
    # other's write: a recipe goes missing, or keeps an older pass's description.
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_declare_many, args=(str(project), prefix, start))
        for prefix in ("alpha", "beta")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    last = {
        f"{prefix}_{i % RECIPES_PER_PROCESS}": f"Pass {i}."
        for prefix in ("alpha", "beta")
        for i in range(WRITES_PER_PROCESS)
    }
    source = _doc(generated)["sources"][0]
    described = {t["name"]: t["description"] for t in source["tables"]}
    assert set(described) == set(last) | {current_table_name(n) for n in last}
    for name, pass_ in last.items():
        assert described[name].endswith(pass_)
        assert described[current_table_name(name)].endswith(pass_)
    assert _exposures(generated) == set(last)


# -- the schema dbt reads the sources from -------------------------------------------------------


def test_scores_written_where_dbt_would_not_look_are_refused(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dbt resolves the sources' schema from ML_PREDICTIONS_SCHEMA alone: a schema set in a
    config overlay or in .env would send the scores where no dbt model reads them."""
    recipe = _recipe("uplift_a")
    dev = project / "config" / "dev.yaml"
    original = dev.read_text()
    dev.write_text(original + "predictions:\n  schema: scores_x\n")
    with pytest.raises(ConfigError) as exc:
        check_writable(load_settings(root=project), recipe)
    assert _one_line_error(exc, "predictions.schema") == (
        "predictions.schema is 'scores_x' but dbt reads the score sources from 'predictions' "
        "(its default): export ML_PREDICTIONS_SCHEMA=scores_x so the models built on the "
        "scores read them (dbt reads neither config/ nor .env)"
    )
    assert not (project / GENERATED).exists()
    monkeypatch.setenv("ML_PREDICTIONS_SCHEMA", "scores_x")
    check_writable(load_settings(root=project), recipe)  # dbt reads the same schema now

    dev.write_text(original)
    (project / ".env").write_text("ML_PREDICTIONS_SCHEMA=from_dotenv\n")
    monkeypatch.setenv("ML_PREDICTIONS_SCHEMA", "scores_x")  # the real environment wins
    check_writable(load_settings(root=project), recipe)
    monkeypatch.delenv("ML_PREDICTIONS_SCHEMA")
    with pytest.raises(ConfigError) as exc:
        check_writable(load_settings(root=project), recipe)
    assert _one_line_error(exc, "predictions.schema is 'from_dotenv' but dbt reads")


# -- each column once, and nothing dbt would render from the recipe ------------------------------


JINJA = "Scores {{ no_such_macro() }} for the team: {% if x %}{# not a comment #} as written."


def test_a_description_with_template_syntax_is_declared_inside_a_raw_block() -> None:
    tables, exposure = declaration(_recipe("templated", JINJA))
    for table in tables:
        assert table["description"].startswith("{% raw %}")
        assert "scores of recipe templated" in table["description"].lower()
        assert table["description"].endswith(f" {JINJA}{{% endraw %}}")
    assert "{%" not in exposure["description"]  # no recipe text there: nothing to wrap
    plain, _ = declaration(_recipe("plain", "No braces here."))
    assert plain[0]["description"].endswith(" No braces here.") and "raw" not in str(plain)


def test_a_description_with_an_endraw_tag_is_never_written(
    settings: Settings, generated: Path
) -> None:
    # the recipe refuses it; one built without validation is refused here, before any write
    with pytest.raises(RecipeError, match="description: must not contain an '{% endraw %}' tag"):
        _recipe("ends", "x {% endraw %}{{ no_such_macro() }}")
    recipe = _recipe("ends").model_copy(update={"description": "x {%- endraw %}{{ boom() }}"})
    for call in (check_writable, ensure_declared):
        with pytest.raises(RecipeError) as exc:
            call(settings, recipe)
        assert _one_line_error(exc, "recipe ends: ") == (
            "recipe ends: description: must not contain an '{% endraw %}' tag"
        )
    assert not generated.exists()


def _composite(name: str = "per_campaign") -> Recipe:
    """A composite key (customer, campaign) whose campaign part is also the context column."""
    recipe = _recipe(name)
    data = recipe.data.model_copy(update={"entity_keys": ["customer_id", "campaign_id"]})
    return recipe.model_copy(update={"data": data})


def _unique(table: dict[str, Any]) -> list[str]:
    return table["data_tests"][0]["unique_combination"]["arguments"]["columns"]


def test_an_entity_key_that_is_the_context_column_is_declared_once() -> None:
    history, current = declaration(_composite()).tables
    names = [c["name"] for c in history["columns"]]
    assert names == [
        "customer_id",
        "campaign_id",
        "score",
        "model_name",
        "model_version",
        "run_id",
        "scored_at",
    ]
    assert history["columns"][1]["description"] == (
        "Entity key from score_uplift, and the context the population was scored for."
    )
    assert _unique(history) == ["customer_id", "campaign_id", "run_id"]
    assert _unique(current) == ["customer_id", "campaign_id"]


@pytest.fixture
def dbt_project(project: Path, root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project copy with the real dbt project's files: one `dbt parse` can read it."""
    for name in ("dbt_project.yml", "profiles.yml", "selectors.yml"):
        shutil.copy(root / name, project / name)
    for folder in ("models", "macros", "tests/dbt"):
        shutil.copytree(root / folder, project / folder, ignore=shutil.ignore_patterns(".*"))
    monkeypatch.setenv("ML_DUCKDB_PATH", str(project / "warehouse.duckdb"))
    return project


def test_dbt_parses_the_generated_file_and_shows_the_text_as_written(
    dbt_project: Path, settings: Settings
) -> None:
    from ml.dbt import DbtProject

    assert ensure_declared(settings, _composite()) is True
    assert ensure_declared(settings, _recipe("templated", JINJA)) is True
    dbt = DbtProject(settings)
    dbt.parse()  # failed on a test declared twice, then on the undefined macro
    manifest = json.loads(dbt.manifest_path.read_text())

    sources = {s["name"]: s for s in manifest["sources"].values()}
    for name in ("templated", "templated__current"):
        assert sources[name]["description"].endswith(f" {JINJA}")
        assert "raw" not in sources[name]["description"]
    assert list(sources["per_campaign"]["columns"]) == list(sources["templated"]["columns"])
    tests = [
        n
        for n in manifest["nodes"].values()
        if n["resource_type"] == "test"
        and n["depends_on"]["nodes"][0].startswith("source.mmp.predictions.per_campaign")
    ]
    combos = sorted(
        n["test_metadata"]["kwargs"]["columns"]
        for n in tests
        if n["test_metadata"]["name"] == "unique_combination"
    )
    assert combos == [["customer_id", "campaign_id"], ["customer_id", "campaign_id", "run_id"]]
    not_null = sorted(n["column_name"] for n in tests if n["test_metadata"]["name"] == "not_null")
    once = ["campaign_id", "customer_id", "model_name", "run_id", "score", "scored_at"]
    assert not_null == sorted(once * 2)  # per table, each column's test once
