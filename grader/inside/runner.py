"""Stage 1 of grading, the untrusted side: this runs INSIDE the sandbox, as the sandbox's user.

It reads one request (JSON) on stdin: the submitted notebook, the parameters to inject, the time
limits and the hidden calls. It executes the notebook with nbclient in a fresh Jupyter kernel
(errors allowed; a cell is interrupted when it runs past its limit; a cell that kills the kernel is
skipped on a rerun), then, in the same kernel, calls the student's functions on the hidden inputs
(through ``harness``) and writes what came back to stdout as frames (``wire.Frames``).

Nothing here is trusted by the grader. The student's code runs as the same user and could in
principle forge what this process sends, so stage 2 (``judge``, ``wire``) re-parses every value
strictly and only ever scores the submission's own values. This process still makes forging hard:
it turns itself non-dumpable (``confine``: the kernel cannot read its memory, its environment or
its descriptors), keeps the pipe on a private close-on-exec descriptor (the kernel's stdout and
stderr are /dev/null) and only learns the frame nonce on stdin. Student functions return values
through a file in the scratch folder, which this process reads with a size limit and forwards as an
opaque string. Serves the README's "Exercises and grading (instructors)" section (each submission
runs in its own sandbox in the smoke preset) and docs/grading.md "How it is built".

Run as ``python -m grader.inside.runner`` by ``sandbox.py``; never imports torch itself.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from grader.inside.confine import apply_rlimits, install_seccomp, make_undumpable
from grader.inside.harness import HARNESS
from grader.inside.wire import Frames

MAX_REQUEST_BYTES = 512 * 2**20
MAX_TEXT = 300  # characters of an error message kept for the feedback
PROBE_TIMEOUT_S = 3  # how long an interrupted kernel gets to answer before it is killed
IOPUB_TIMEOUT_S = 2  # how long nbclient waits for a cell's last output once it has replied
NICENESS = 10  # the submission runs below the grader's priority


def _short(text: Any) -> str:
    text = str(text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


def inject_parameters(nb: Any, parameters: dict[str, Any]) -> int:
    """Insert a cell assigning ``parameters`` after the cell tagged ``parameters`` (papermill's way).

    Returns the index of the injected cell. Values are literals (checked by the grader).
    """
    import nbformat

    source = "# Parameters injected by the grader\n" + "\n".join(
        f"{name} = {value!r}" for name, value in parameters.items()
    )
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    at = 0
    for index, existing in enumerate(nb.cells):
        if existing.cell_type == "code" and "parameters" in existing.metadata.get("tags", []):
            at = index + 1
            break
    nb.cells.insert(at, cell)
    return at


class Runner:
    def __init__(self, request: dict[str, Any], frames: Frames, scratch: Path) -> None:
        self.request = request
        self.frames = frames
        self.work = scratch / "work"
        self.results = scratch / "results"
        self.runtime = Path(os.environ.get("JUPYTER_RUNTIME_DIR", scratch / "runtime"))
        self.cell_s = max(1, math.ceil(request["cell_s"]))
        self.call_s = max(1, math.ceil(request["call_s"]))
        self.deadline = time.monotonic() + float(request["wall_s"]) - 1.0
        self.max_restarts = int(request["max_restarts"])
        self.max_result_bytes = int(request["max_result_bytes"])
        self.calls: list[dict[str, Any]] = request["calls"]
        for d in (self.work, self.results, self.runtime, scratch / "home", scratch / "tmp",
                  scratch / "runs"):
            d.mkdir(parents=True, exist_ok=True)

    # ---- the kernel
    def _client(self, nb: Any) -> Any:
        from jupyter_client.manager import AsyncKernelManager
        from nbclient import NotebookClient

        class Client(NotebookClient):
            """Keeps no outputs (a student may print gigabytes) and remembers timeouts/replies."""

            timed_out = False
            last_reply: dict | None = None

            def output(self, outs, msg, display_id, cell_index):  # noqa: ANN001
                return None

            async def _async_handle_timeout(self, timeout, cell=None):  # noqa: ANN001
                self.timed_out = True
                return await super()._async_handle_timeout(timeout, cell)

            async def _check_raise_for_error(self, cell, cell_index, exec_reply):  # noqa: ANN001
                self.last_reply = exec_reply
                return await super()._check_raise_for_error(cell, cell_index, exec_reply)

        # Async: nbclient's timeouts only work when polling the kernel does not block its loop.
        km = AsyncKernelManager(kernel_name="python3", transport="ipc",
                                ip=str(self.runtime / "kernel"))
        return Client(
            nb,
            km=km,
            timeout=self.cell_s,
            interrupt_on_timeout=True,
            error_on_timeout={"ename": "TimeoutError", "evalue": "cell time limit", "traceback": []},
            allow_errors=True,
            startup_timeout=120,
            kernel_name="python3",
            resources={"metadata": {"path": str(self.work)}},
            shutdown_kernel="immediate",
            iopub_timeout=IOPUB_TIMEOUT_S,
        )

    def _run(self, client: Any, cell: Any, index: int, timeout: int) -> dict[str, Any]:
        """Execute one cell; report ok / error / timeout / died (the kernel is gone)."""
        from nbclient.exceptions import DeadKernelError

        remaining = self.deadline - time.monotonic()
        if remaining < 1:
            return {"status": "not-run", "reason": "out of time"}
        client.timeout = max(1, min(timeout, int(remaining)))
        client.timed_out, client.last_reply = False, None
        try:
            client.execute_cell(cell, index)
        except DeadKernelError:
            return {"status": "died", **self._exit_of(client)}
        if client.timed_out:
            if not self._responsive(client):  # interrupt ignored: kill it, rerun without this cell
                from jupyter_core.utils import run_sync

                run_sync(client.km.shutdown_kernel)(now=True)
                return {"status": "died", "reason": "ignored the interrupt", "exit": None}
            return {"status": "timeout"}
        content = (client.last_reply or {}).get("content", {})
        if content.get("status") == "error":
            return {"status": "error", "ename": _short(content.get("ename", "")),
                    "evalue": _short(content.get("evalue", ""))}
        return {"status": "ok"}

    def _responsive(self, client: Any) -> bool:
        import nbformat
        from nbclient.exceptions import DeadKernelError

        client.timeout, client.timed_out = PROBE_TIMEOUT_S, False
        try:
            client.execute_cell(nbformat.v4.new_code_cell("pass"), 0, store_history=False)
        except DeadKernelError:
            return False
        return not client.timed_out

    @staticmethod
    def _exit_of(client: Any) -> dict[str, Any]:
        process = getattr(getattr(client.km, "provisioner", None), "process", None)
        code = None
        if process is not None:
            for _ in range(20):
                code = process.poll()
                if code is not None:
                    break
                time.sleep(0.05)
        return {"exit": code}

    # ---- the whole submission
    def run(self) -> None:
        import nbformat

        try:
            nb = nbformat.reads(self.request["notebook"], as_version=4)
            cells = list(nb.cells)
            for cell in cells:
                if cell.cell_type == "code":
                    cell.outputs, cell.execution_count = [], None
        except Exception as err:  # anything unreadable is the submission's problem
            self.frames.emit({"type": "invalid", "error": _short(f"{type(err).__name__}: {err}")})
            self.frames.emit({"type": "done"})
            return
        originals = [i for i, c in enumerate(cells) if c.cell_type == "code"]
        order = {id(c): i for i, c in enumerate(cells)}
        injected_at = inject_parameters(nb, self.request["parameters"])
        injected = nb.cells[injected_at]

        results: dict[int, dict[str, Any]] = {}  # original cell index -> last result
        killers: set[int] = set()  # cells that killed the kernel, skipped on a rerun
        pending = list(range(len(self.calls)))
        deaths: list[dict[str, Any]] = []
        restarts = 0
        while True:
            died = False
            nb.cells = [c for c in nb.cells if order.get(id(c)) not in killers]
            client = self._client(nb)
            cells_sent = False
            try:
                with client.setup_kernel():
                    for position, cell in enumerate(nb.cells):
                        if cell.cell_type != "code":
                            continue
                        original = order.get(id(cell))
                        if "skip-grading" in cell.metadata.get("tags", []):
                            results[original] = {"status": "skipped"}
                            continue
                        outcome = self._run(client, cell, position, self.cell_s)
                        if cell is injected:
                            if outcome["status"] == "died":
                                died = True
                                break
                            continue
                        outcome.update(self._describe(cell))
                        results[original] = outcome
                        if outcome["status"] == "died":
                            killers.add(original)
                            deaths.append({"cell": original, "exit": outcome.get("exit"),
                                           "reason": outcome.get("reason")})
                            died = True
                            break
                    self._emit_cells(originals, results, deaths, restarts)
                    cells_sent = True
                    if not died:
                        died = self._calls(client, pending, deaths)
            except Exception as err:  # the kernel would not start, or talked nonsense
                if not cells_sent:
                    self._emit_cells(originals, results, deaths, restarts)
                error = _short(f"{type(err).__name__}: {err}")
                self.frames.emit({"type": "runner-error", "error": error})
                break
            if not died or not pending:
                break
            if restarts >= self.max_restarts or self.deadline - time.monotonic() < 5:
                break
            restarts += 1
        for index in pending:
            self.frames.emit({"type": "call", "index": index, "status": "not-run"})
        self.frames.emit({"type": "done", "restarts": restarts})

    @staticmethod
    def _describe(cell: Any) -> dict[str, Any]:
        meta = cell.metadata.get("exercise")
        ex_id = meta.get("id") if isinstance(meta, dict) else None
        first = next((line for line in cell.source.splitlines() if line.strip()), "")
        return {"exercise": _short(ex_id) if isinstance(ex_id, str) else None,
                "first_line": _short(first)[:80]}

    def _emit_cells(self, originals: list[int], results: dict[int, dict[str, Any]],
                    deaths: list[dict[str, Any]], restarts: int) -> None:
        cells = []
        for number, original in enumerate(originals, start=1):
            entry = {"number": number, **results.get(original, {"status": "not-run"})}
            cells.append(entry)
        self.frames.emit({"type": "cells", "cells": cells, "deaths": deaths, "restarts": restarts})

    def _calls(self, client: Any, pending: list[int], deaths: list[dict[str, Any]]) -> bool:
        """Call the student's functions on the hidden inputs; True if the kernel died meanwhile."""
        import nbformat

        setup = self._run(client, nbformat.v4.new_code_cell(HARNESS), 0, self.cell_s)
        if setup["status"] == "died":
            deaths.append({"cell": None, "exit": setup.get("exit"), "reason": "grader setup"})
            return True
        while pending:
            index = pending[0]
            call = self.calls[index]
            result_file = self.results / f"{index}.json"
            result_file.unlink(missing_ok=True)
            request = json.dumps({"args": call["args"], "kwargs": call["kwargs"],
                                  "returns": call["returns"],
                                  "references": call.get("references", [])}, allow_nan=True)
            source = (f"__nblib_grading_call__({index}, {call['function']!r}, {request!r}, "
                      f"{str(self.results)!r}, {int(call.get('max_elements', 10**7))})")
            outcome = self._run(client, nbformat.v4.new_code_cell(source), 0, self.call_s)
            pending.pop(0)
            frame: dict[str, Any] = {"type": "call", "index": index}
            if outcome["status"] == "died":
                deaths.append({"cell": None, "call": index, "exit": outcome.get("exit"),
                               "reason": outcome.get("reason")})
                self.frames.emit({**frame, "status": "died"})
                return True
            if outcome["status"] in ("timeout", "not-run"):
                self.frames.emit({**frame, "status": outcome["status"]})
                continue
            self.frames.emit({**frame, **self._read_result(result_file)})
        return False

    def _read_result(self, path: Path) -> dict[str, Any]:
        import stat

        try:  # a FIFO or a symlink planted there must not block or redirect us
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return {"status": "no-result"}
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return {"status": "no-result"}
            with os.fdopen(fd, "rb", closefd=False) as fh:
                data = fh.read(self.max_result_bytes + 1)
        except OSError:
            return {"status": "no-result"}
        finally:
            os.close(fd)
        if len(data) > self.max_result_bytes:
            return {"status": "too-large"}
        return {"status": "returned", "result": data.decode("utf-8", errors="replace")}


def main() -> int:
    make_undumpable()
    raw = sys.stdin.buffer.read(MAX_REQUEST_BYTES + 1)
    # From here on the kernel and anything it starts inherit only /dev/null as stdio.
    out_fd = os.dup(1)
    err_fd = os.dup(2)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    sys.stderr = open(err_fd, "w", buffering=1, closefd=True)  # noqa: SIM115
    if len(raw) > MAX_REQUEST_BYTES:
        print("request too large", file=sys.stderr)
        return 2
    request = json.loads(raw)
    apply_rlimits(request["rlimits"])
    try:
        os.nice(NICENESS)
    except OSError:
        pass
    if not install_seccomp():
        print("note: no seccomp filter on this machine; nested user namespaces stay possible",
              file=sys.stderr)
    frames = Frames(out_fd, request["nonce"])
    scratch = Path(os.environ.get("NBLIB_GRADING_SCRATCH", "/tmp/grading"))
    Runner(request, frames, scratch).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
