"""Hot reload: a server started with `--model NAME@ALIAS` asks the registry every
`serving.reload_seconds` which version the alias names. When it moved, the new version loads in
a background thread while requests keep being answered by the old one, then one assignment
swaps it in: a request in flight finishes on the model it started with, the next one gets the
new model. A version that fails to load, or whose features differ from the served one's (the
request schema and /docs are built from them: restart to serve it), is logged once and the
old version keeps serving. Each worker process runs its own reloader.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ml import registry
from ml.errors import ContractError, MLError, one_line
from ml.model import ScoringModel
from ml.registry import ModelRef, ResolvedModel
from ml.serving.served import Served

log = logging.getLogger("uvicorn.error")  # where uvicorn writes its own lifecycle lines


def watches(ref: ModelRef) -> bool:
    """Only an alias moves: a run id or a version number names one model for good."""
    return bool(ref.name and ref.alias_or_version and not ref.alias_or_version.isdigit())


class Reloader:
    def __init__(
        self,
        ref: ModelRef,
        interval: float,
        current: Callable[[], Served],
        swap: Callable[[Served], None],
        load: Callable[[ResolvedModel], ScoringModel] = registry.load_pyfunc,
    ) -> None:
        self.ref, self.interval = ref, interval
        self.current, self.swap, self.load = current, swap, load
        self.refused: tuple[str | None, str] | None = None  # the version that failed, once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ml-reload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.check()

    def check(self) -> None:
        """One look at the registry: swap in the alias's version if it moved and loads."""
        shown = f"{self.ref.name}@{self.ref.alias_or_version}"
        try:
            target = registry.resolve(self.ref)
        except Exception as exc:  # noqa: BLE001 - the registry unreachable: ask again next time
            message = exc.message if isinstance(exc, MLError) else one_line(exc, 300)
            log.warning(
                "reload: cannot resolve %s, still serving the loaded version: %s", shown, message
            )
            return
        served = self.current()
        key = (target.model_version, target.run_id)
        if key == (served.target.model_version, served.target.run_id) or key == self.refused:
            return
        try:
            model = self.load(target)
            declared = registry.read_recipe(target).context
            if model.schema.features != served.model.schema.features:
                raise ContractError(
                    "its features differ from the served version's (restart ml serve to serve it)"
                )
        except Exception as exc:  # noqa: BLE001 - any failure keeps the old model serving
            self.refused = key
            message = exc.message if isinstance(exc, MLError) else one_line(exc, 300)
            log.error(
                "reload: %s moved to version %s (run %s), which cannot be served; still serving "
                "version %s: %s",
                shown,
                target.model_version,
                target.run_id,
                served.target.model_version,
                message,
            )
            return
        self.swap(Served(target, model, declared))
        log.info(
            "reload: %s moved: now serving version %s (run %s), was version %s",
            shown,
            target.model_version,
            target.run_id,
            served.target.model_version,
        )
