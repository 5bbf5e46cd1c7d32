"""``--workers N``: N serving processes behind one pair of ports.

The supervisor (``supervisor.py``) binds nothing and loads nothing: it runs
the sources (the file-system source and the config file, or the assignments
and follow mode) against a manager of its own whose load function is the
fleet's (``fleet.py``): a version is AVAILABLE there only once every worker
has loaded it. Each worker is a whole ``rollway serve`` process (gRPC and
REST on the shared ports with SO_REUSEPORT) whose manager mirrors what the
supervisor says to serve (``link.py``), and whose status and readiness are
the supervisor's view of the whole server. Messages between them are
``protocol.py``'s, over one multiprocessing pipe per worker.
"""
