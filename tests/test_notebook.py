"""The Python API in a real Jupyter kernel: a notebook that loads a demo member and predicts,
run by nbclient. Its cells show the model and the frame and nothing else: no progress bars,
no notes, no TensorFlow log lines, no rich output."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (test extra)")
nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (test extra)")
pytest.importorskip("ipykernel", reason="ipykernel is not installed (test extra)")

pytestmark = pytest.mark.slow  # starts a kernel that imports TensorFlow
MEMBER = "small_cnn.demo.s0"


def test_api_in_a_notebook_shows_only_the_results(trained_workspace, tmp_path, capsys):
    from zoo.cli.main import main

    images = sorted((trained_workspace / "data").glob("*/images/*.png"))[:4]
    out = tmp_path / "notebook.csv"
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(
            f"import zoo\nmodel = zoo.load({MEMBER!r}, workspace={str(trained_workspace)!r})\nmodel"
        ),
        nbformat.v4.new_code_cell(
            f"frame = model.predict({[str(p) for p in images]!r})\nframe.to_csv({str(out)!r})\nframe"
        ),
    ]
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    first, second = (cell.outputs for cell in notebook.cells)
    assert [o.output_type for o in first] == ["execute_result"], first
    assert first[0].data["text/plain"].startswith(f"zoo.Model(member '{MEMBER}'")
    assert [o.output_type for o in second] == ["execute_result"], second  # no stream output
    html = second[0].data["text/html"]
    assert "<table" in html and "top_class" in html

    expected = tmp_path / "cli.csv"
    argv = ["predict", MEMBER, *map(str, images), "--workspace", str(trained_workspace)]
    assert main([*argv, "--out", str(expected), "--quiet"]) == 0
    capsys.readouterr()
    cli = pd.read_csv(expected, index_col="image")
    got = pd.read_csv(out, index_col=0)
    assert list(got.index) == list(cli.index)
    np.testing.assert_allclose(got[cli.columns].to_numpy(), cli.to_numpy(), atol=1e-7)
