"""A script's pool initializer sets up state that the script's tasks see (run as
``python script.py``, where both travel to the workers by value), while a global the
driver changes between two invokes still reaches the next run (procflow/_initglobals.py).
Each script runs in a subprocess of its own session, killed with its group on timeout."""

from __future__ import annotations

import json
from pathlib import Path

from support import env_with, run

STATE_FILLED_BY_THE_INITIALIZER = """
import json

from procflow import entrypoint, task

STATE = {}


def setup(prefix):
    STATE["prefix"] = prefix


@task
def tag(x: str) -> str:
    return f"{STATE.get('prefix', 'NOINIT')}:{x}"


@entrypoint(checkpointer=False, max_workers=2, initializer=setup, initargs=("P",))
def main() -> list:
    return [f.result(timeout=30) for f in tag.map(["a", "b", "c"])]


if __name__ == "__main__":
    print(json.dumps(main.invoke()))
"""

GLOBAL_ASSIGNED_BY_THE_INITIALIZER = """
import json

from procflow import entrypoint, task

MODEL = None


def load(name):
    return {"name": name, "weights": [1, 2, 3]}


def setup(name):
    global MODEL, LOADED  # LOADED is not defined at the top level at all
    MODEL = load(name)
    LOADED = True


@task
def predict(x: int) -> list:
    if MODEL is None:
        return ["NOINIT", x]
    return [MODEL["name"], x * sum(MODEL["weights"]), LOADED]


@entrypoint(checkpointer=False, max_workers=2, initializer=setup, initargs=("tiny",))
def main() -> list:
    return [f.result(timeout=30) for f in predict.map([1, 2])]


if __name__ == "__main__":
    print(json.dumps(main.invoke()))
"""

DRIVER_CHANGES_A_GLOBAL_THE_INITIALIZER_READ = """
import json

from procflow import entrypoint, task

SCALE = 1
SEEN = {}


def setup():
    SEEN["scale at start"] = SCALE


@task
def scaled(x: int) -> list:
    return [x * SCALE, SEEN.get("scale at start")]


@entrypoint(checkpointer=False, max_workers=1, initializer=setup)
def main(x: int) -> list:
    return scaled(x).result(timeout=30)


if __name__ == "__main__":
    first = main.invoke(10)
    SCALE = 100  # a notebook's parameter cell, changed and run again
    print(json.dumps([first, main.invoke(10)]))
"""


def _run_script(tmp_path: Path, name: str, text: str) -> object:
    script = tmp_path / name
    script.write_text(text)
    code, out, err = run([str(script)], env_with(), timeout=90, cwd=tmp_path)
    assert code == 0, err
    return json.loads(out)


def test_a_script_task_sees_the_state_its_initializer_filled(tmp_path: Path) -> None:
    # The initializer was unpickled apart from the task, with its own copy of the
    # script's globals: it filled a STATE no task read (['NOINIT:a', ...]).
    result = _run_script(tmp_path, "init_flow.py", STATE_FILLED_BY_THE_INITIALIZER)
    assert result == ["P:a", "P:b", "P:c"]


def test_a_script_task_sees_globals_its_initializer_assigned(tmp_path: Path) -> None:
    # `global MODEL; MODEL = load()`: the task saw MODEL = None, and LOADED (which only
    # the initializer defines) not at all.
    result = _run_script(tmp_path, "model_flow.py", GLOBAL_ASSIGNED_BY_THE_INITIALIZER)
    assert result == [["tiny", 6, True], ["tiny", 12, True]]


def test_a_global_the_driver_changed_between_invokes_still_wins(tmp_path: Path) -> None:
    # SCALE is one of the initializer's globals too, and the second run shares the first
    # one's worker, initialised with SCALE = 1: the driver's new value must still reach
    # the task (a notebook's parameter), while SEEN, unchanged, is the initializer's.
    result = _run_script(tmp_path, "scale_flow.py", DRIVER_CHANGES_A_GLOBAL_THE_INITIALIZER_READ)
    assert result == [[10, 1], [1000, 1]]
