"""Serving: what happens to a client from accept to goodbye.

Read it in this order:

1. ``serve``: ``serve()`` and ``Server``: open the listeners, start the accept
   loops, and the graceful stop.
2. ``accept``: one loop per listener: slots first (backpressure), the peer
   policy, and which path serves each client.
3. ``clients``: how clients come in and go out: slots, arrival, departure records.
4. ``handlers``: what each client gets: a sans-I/O protocol class (the increment
   is one, ``trio_sock.protocol``) or an async handler.
5. ``stream``: the plain reference loop over a Trio stream (TLS, ``--once``,
   ``--delay``): read this one first to see what every client gets.
6. ``fast``: the same behaviour on the raw socket, faster (sans-I/O protocols on
   plain sockets).
7. ``connection`` and ``handled``: an async handler's ``Connection``, and its client's task.
8. ``watched_stream`` and ``reaper``: the idle timeout, one task for every client.
9. ``peers``: peer credentials and ``--allow-uid``/``--allow-gid``.
10. ``departures``, ``stats``, ``words``: what the logs and the stats line say.
11. ``ready``: the ready line, the one line a server prints on stdout.

May import ``protocol``, ``config``, ``errors``, ``tls`` and ``listen``; never
``workers`` or ``cli``.
"""
