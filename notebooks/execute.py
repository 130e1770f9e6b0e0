"""Executes every notebook here headless (nbclient, working directory notebooks/), as
.ci/run does, so they never rot. The notebooks in git must carry no outputs; this
checks that too, and writes nothing back.

Usage: python3 notebooks/execute.py
"""
import pathlib
import sys

import nbformat
from nbclient import NotebookClient

here = pathlib.Path(__file__).resolve().parent
failed = False
for path in sorted(here.glob("*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    stored = [c for c in nb.cells if c.cell_type == "code" and (c.outputs or c.execution_count)]
    if stored:
        print(f"{path.name}: {len(stored)} cells carry outputs; strip them before committing")
        failed = True
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(here)}}).execute()
    except Exception as e:  # the cell's error, with its traceback, is in the message
        print(f"{path.name}: FAILED\n{e}")
        failed = True
        continue
    figures = sum(
        1
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    )
    print(f"{path.name}: ran {sum(c.cell_type == 'code' for c in nb.cells)} cells, {figures} figures")
    if figures == 0:
        print(f"{path.name}: drew no figure")
        failed = True
sys.exit(1 if failed else 0)
