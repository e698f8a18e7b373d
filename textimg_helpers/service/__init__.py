"""The shared Milvus Lite service: one process per Lite file serves it to every process of its user.

Milvus Lite lets one process open a file, so the first client of a free Lite file starts a small
service process (its own session: it outlives the kernel or command that started it) that serves the
file on a Unix socket in a folder only its user can enter. The room has three modules:

- ``files``: where things are (the private folder, the socket, the state, the log, the locks beside
  the database) and what both sides read or check (the state as written, the file's identity, whether
  a socket answers, whether the file is in use or writable);
- ``client``: what clients use to find, start and stop a file's service, and to confirm their writes;
- ``process``: the detached service process itself (``python -m textimg_helpers.service.process``).

The client side never imports ``process``; the service process is started as a command.
"""

__all__: list[str] = []
