"""Serving: what happens to a client from accept to goodbye.

Read it in this order:

1. ``serve``: ``serve()`` and ``Server``: open the listeners, accept in batches,
   hand each client to a task, and the graceful stop.
2. ``clients``: how clients come in and go out: slots (backpressure), arrival,
   departure records.
3. ``stream``: the plain reference loop over a Trio stream (TLS, ``--once``,
   ``--delay``): read this one first to see what every client gets.
4. ``fast``: the same behaviour on the raw socket, faster (plain clients).
5. ``watched_stream`` and ``reaper``: the idle timeout, one task for every client.
6. ``peers``: peer credentials and ``--allow-uid``/``--allow-gid``.
7. ``departures``, ``stats``, ``words``: what the logs and the stats line say.
8. ``ready``: the ready line, ``server waiting on ...``.

May import ``protocol``, ``config``, ``errors``, ``tls`` and ``listen``; never
``workers`` or ``cli``.
"""
