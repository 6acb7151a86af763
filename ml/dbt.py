"""dbt in-process: parse and build through dbtRunner, and read models, contracts and relation
names from the manifest (schemas differ per target, so they are never hard-coded)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml.config import Settings
from ml.errors import ConfigError, DbtError
from ml.warehouse.base import Relation

_PROJECT_INPUTS = ("models", "macros", "seeds", "tests", "snapshots", "analyses")
_PROJECT_FILES = ("dbt_project.yml", "profiles.yml", "packages.yml")


@dataclass(frozen=True)
class DbtModel:
    name: str
    unique_id: str
    relation: Relation
    columns: dict[str, str | None]  # column -> declared data_type (None if undeclared)
    contract_enforced: bool
    checksum: str
    original_file_path: str
    raw_code: str
    depends_on: tuple[str, ...] = field(default_factory=tuple)


class DbtProject:
    """The dbt project at the settings' root, for the settings' target."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.project_dir = settings.path(settings.dbt.project_dir)
        self.profiles_dir = settings.path(settings.dbt.profiles_dir)
        self.target = settings.dbt.target
        self.target_path = self.project_dir / "target" / f"ml-{self.target}"
        self._manifest: dict[str, Any] | None = None
        self._results: dict[str, Any] | None = None  # run_results.json of the manifest's invocation

    # -- running dbt -------------------------------------------------------------------------
    def invoke(
        self, args: list[str], vars: dict[str, Any] | None = None, quiet: bool = False
    ) -> Any:
        """Run one dbt command in-process; its log goes to stderr (or nowhere) so stdout stays ours."""
        from dbt.cli.main import dbtRunner

        full = [
            *args,
            "--project-dir",
            str(self.project_dir),
            "--profiles-dir",
            str(self.profiles_dir),
            "--target",
            self.target,
            "--target-path",
            str(self.target_path),
        ]
        if vars:
            full += ["--vars", json.dumps(vars, default=str)]
        captured = io.StringIO() if quiet else None
        # stdout only: the swap is process-wide, and a dbt run in a background thread must not
        # take the main thread's stderr (its progress and error lines) with it
        with self._locked(), contextlib.redirect_stdout(captured or sys.stderr):
            result = dbtRunner().invoke(full)
        if not result.success:
            detail = _first_failure(result, captured.getvalue() if captured else None)
            raise DbtError(f"dbt {args[0]} failed for target {self.target}: {detail}")
        self._manifest = self._results = None
        return result

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Concurrent `ml` processes take turns with dbt's target folder (manifest writes)."""
        import fcntl

        self.target_path.mkdir(parents=True, exist_ok=True)
        with open(self.target_path / ".ml.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def parse(self) -> None:
        # quiet: a failure is our one line (dbt's own block of it would come before it)
        self.invoke(["parse", "--quiet"], quiet=True)

    def build(self, select: str, vars: dict[str, Any] | None = None) -> None:
        # cautious: run only the tests of what was selected, not those of other models that
        # merely ref it (a relationships test of a downstream mart would need that mart built)
        self.invoke(
            ["build", "--select", select, "--indirect-selection", "cautious", "--quiet"],
            vars=vars,
        )

    # -- manifest ----------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.target_path / "manifest.json"

    def manifest(self) -> dict[str, Any]:
        """The manifest for this target: the newer of ml's own and the one a plain `dbt` command
        left in dbt's target folder for this target; re-parsed whenever a project file is newer."""
        if self._manifest is None:
            self._manifest = self._load_manifest()
            self._check_adapter(self._manifest)
        return self._manifest

    def _check_adapter(self, manifest: dict[str, Any]) -> None:
        """The dbt target writes to the warehouse `ml` reads: a DuckDB target for DuckDB."""
        adapter = (manifest.get("metadata") or {}).get("adapter_type")
        wanted = self.settings.warehouse.type
        if adapter and adapter != wanted:
            raise ConfigError(
                f"dbt.target {self.target!r} is a {adapter} target but warehouse.type is "
                f"{wanted!r}: set both for the same warehouse (APP_ENV picks config/<env>.yaml)"
            )

    def _load_manifest(self) -> dict[str, Any]:
        """The newest manifest for this target (see `manifest`)."""
        newest = self._newest_input()
        own = _mtime(self.manifest_path)
        own_fresh = own is not None and own >= newest
        shared = self._shared_artifacts(newest)
        if shared is not None and (not own_fresh or shared[2] > (own or 0.0)):
            self._results = shared[1]
            return shared[0]
        if not own_fresh:
            self.parse()
        manifest = self._read_own()
        databases = _databases(manifest)
        if own_fresh and databases and databases != {self._database()}:
            self.parse()  # parsed against another DuckDB file or BigQuery project
            manifest = self._read_own()
        self._results = None  # read from ml's own target folder when needed
        return manifest

    def _read_own(self) -> dict[str, Any]:
        try:
            with self._locked():
                manifest: dict[str, Any] = json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise DbtError(f"{self.manifest_path}: cannot read the dbt manifest ({exc})") from None
        return manifest

    def _shared_artifacts(
        self, newest: float | None = None
    ) -> tuple[dict[str, Any], dict[str, Any], float] | None:
        """manifest.json and run_results.json from dbt's own target folder (`dbt build` run by
        hand or by a scheduler), when one invocation wrote both, for this target (named with
        --target), without vars, against the same database (DuckDB file or BigQuery project),
        and no project file changed since; None otherwise. Reusing them saves `ml` a parse of
        the whole project."""
        folder = Path(os.environ.get("DBT_TARGET_PATH") or self.project_dir / "target")
        if not folder.is_absolute():
            folder = self.project_dir / folder
        manifest_path = folder / "manifest.json"
        mtime = _mtime(manifest_path)
        if newest is None:
            newest = self._newest_input()
        if folder.resolve() == self.target_path.resolve() or mtime is None or mtime < newest:
            return None
        try:
            manifest = json.loads(manifest_path.read_text())
            results = json.loads((folder / "run_results.json").read_text())
        except (OSError, ValueError):
            return None  # absent, or being written by a running dbt
        invocation = (manifest.get("metadata") or {}).get("invocation_id")
        args = results.get("args") or {}
        databases = _databases(manifest)
        if (
            not invocation
            or (results.get("metadata") or {}).get("invocation_id") != invocation
            or args.get("target") != self.target
            or _canonical(args.get("vars") or {}) != _canonical({})
            or databases != {self._database()}  # built against another file or project
        ):
            return None
        return manifest, results, mtime

    def _database(self) -> str | None:
        """The database dbt names relations with on this target: the DuckDB file's stem, or
        the BigQuery project."""
        from ml.warehouse import database_name

        return database_name(self.settings)

    def _newest_input(self) -> float:
        """The latest modification time of any project file: a manifest older than it is stale."""
        times = [
            p.stat().st_mtime for name in _PROJECT_FILES if (p := self.project_dir / name).is_file()
        ]
        for folder in _PROJECT_INPUTS:
            base = self.project_dir / folder
            if base.is_dir():
                times += [p.stat().st_mtime for p in base.rglob("*") if p.is_file()]
        return max(times, default=0.0)

    def find_model(self, name: str) -> DbtModel | None:
        nodes = self.manifest().get("nodes", {})
        for node in nodes.values():
            if node.get("resource_type") == "model" and node.get("name") == name:
                return _model_from_node(node)
        return None

    def model_names(self) -> list[str]:
        nodes = self.manifest().get("nodes", {})
        return sorted(n["name"] for n in nodes.values() if n.get("resource_type") == "model")

    def compiled_sql(self, name: str, vars: dict[str, Any] | None = None) -> str:
        """The model's SQL as dbt compiles it for this target (logged with every run): what
        this target's last dbt invocation recorded when that still holds, else `dbt compile`."""
        recorded = self.recorded_sql(name, vars)
        if recorded is not None:
            return recorded
        result = self.invoke(["compile", "--select", name, "--quiet"], vars=vars, quiet=True)
        for node_result in result.result or []:
            node = getattr(node_result, "node", None)
            if node is not None and getattr(node, "compiled_code", None):
                return str(node.compiled_code)
        raise DbtError(f"dbt compile returned no SQL for model {name}")

    def recorded_sql(self, name: str, vars: dict[str, Any] | None = None) -> str | None:
        """The model's compiled SQL from run_results.json, if the invocation that wrote it also
        wrote the current manifest (same invocation id: nothing re-parsed since) and ran for
        this target with the same vars; None otherwise. A build or compile leaves it there, so
        the usual `dbt build` then `ml train` needs no second dbt invocation."""
        model = self.find_model(name)
        if model is None:
            return None
        results = self._results
        if results is None:
            try:
                with self._locked():
                    results = json.loads((self.target_path / "run_results.json").read_text())
            except (OSError, ValueError):
                return None
        invocation = (results.get("metadata") or {}).get("invocation_id")
        if not invocation or invocation != (self.manifest().get("metadata") or {}).get(
            "invocation_id"
        ):
            return None
        args = results.get("args") or {}
        if args.get("target", self.target) != self.target:
            return None
        if _canonical(args.get("vars") or {}) != _canonical(vars or {}):
            return None
        for r in results.get("results") or []:
            if r.get("unique_id") == model.unique_id and r.get("compiled_code"):
                return str(r["compiled_code"])
        return None


def _mtime(path: Path) -> float | None:
    return path.stat().st_mtime if path.is_file() else None


def _canonical(vars: Any) -> str:
    if isinstance(vars, str):  # older run_results keep --vars as given
        try:
            import yaml

            vars = yaml.safe_load(vars) or {}
        except yaml.YAMLError:
            return vars
    return json.dumps(vars, sort_keys=True, default=str)


def _model_from_node(node: dict[str, Any]) -> DbtModel:
    contract = (node.get("config") or {}).get("contract") or {}
    enforced = contract.get("enforced")
    return DbtModel(
        name=node["name"],
        unique_id=node["unique_id"],
        relation=Relation(node.get("database"), node["schema"], node.get("alias") or node["name"]),
        columns={c["name"]: c.get("data_type") for c in (node.get("columns") or {}).values()},
        contract_enforced=enforced is True or str(enforced).lower() == "true",
        checksum=(node.get("checksum") or {}).get("checksum", ""),
        original_file_path=node.get("original_file_path", ""),
        raw_code=node.get("raw_code", ""),
        depends_on=tuple((node.get("depends_on") or {}).get("nodes", [])),
    )


def _databases(manifest: dict[str, Any]) -> set[str | None]:
    """The databases the manifest's models are named in (one: the file or project parsed for)."""
    return {
        n.get("database")
        for n in (manifest.get("nodes") or {}).values()
        if n.get("resource_type") == "model"
    }


def _first_failure(result: Any, log: str | None = None) -> str:
    """What failed, on one line; `log` is dbt's own output when it was kept from the terminal."""
    if result.exception is not None:
        return " ".join(str(result.exception).split())[:500]
    for r in result.result or []:
        status = str(getattr(r, "status", ""))
        if status.lower() in {"error", "fail"}:
            name = getattr(getattr(r, "node", None), "name", "?")
            return f"{name}: {' '.join(str(getattr(r, 'message', '')).split())[:400]}"
    if log is not None:
        return " ".join(log.split())[-400:] or "dbt gave no reason"
    return "see the dbt log above"
