"""The reference Flamenco 2.x manager.

Layers, each knowing only those below it:

* :mod:`~flamenco_manager.services`: the rules (what happens on ``/task``, on a task update, on a
  worker timeout, ...), in plain Python; they know nothing of HTTP;
* :mod:`~flamenco_manager.storage`: the SQL (SQLAlchemy Core), SQLite or PostgreSQL;
* :mod:`~flamenco_manager.web`: HTTP turned into service calls and service results into HTTP.
"""

__version__ = "0.1.0"
