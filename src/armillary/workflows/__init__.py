"""What jobs do: the workflows run by the engine (``armillary.engine``), found through the entry-point group
``armillary.workflows`` (see ``armillary.engine.workflows``).

* ``lifecycle``: create, provision, stage, stop, start, destroy, reload, clone (one system each);
* ``bulk``: a parent job running a child job per system of a selection (``selection``), in batches;
  it also starts the jobs of schedules;
* ``deploy``: deploy and rollback of a project's releases on a system.
"""
