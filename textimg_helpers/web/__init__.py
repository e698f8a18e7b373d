"""The web page of ``textimg app``: machinery that no lesson imports.

- ``app``: the page itself (the notebooks' search panel, indexing a folder, near-duplicates), built
  with ipywidgets by ``explore()``;
- ``explore.ipynb``: the one-cell notebook Voilà renders, which calls ``explore()``;
- ``server``: ``textimg app``, Voilà on 127.0.0.1 behind a token, stopped on Ctrl-C.
"""

__all__: list[str] = []
