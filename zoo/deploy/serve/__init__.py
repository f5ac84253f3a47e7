"""``zoo serve TARGET``: a small local web app around one member or ensemble.

- :mod:`zoo.deploy.serve.answer`: one prediction as the JSON answer (probabilities, top class with
  its full name, OOD scores, the melanoma flag at the target's operating point);
- :mod:`zoo.deploy.serve.app`: the Starlette app (the page, ``POST /predict``, ``/info``,
  ``/health``), upload limits, one lock around the model, predictions in a thread pool;
- :mod:`zoo.deploy.serve.command`: the command: load, warm up, listen (127.0.0.1 by default);
- ``page.html``: the self-contained page (no external resources).

Research software, not a diagnostic device.
"""
