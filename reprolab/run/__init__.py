"""One attempt's life, from a case to its recorded result.

- :mod:`~reprolab.run.session`: the run's resources on one libvirt host (connection, accel,
  kernels, images, SSH key) and :meth:`~reprolab.run.session.Session.run_attempt`;
- :mod:`~reprolab.run.boot`: domain up, console attached, SSH ready (cold boot and snapshot
  restore share it; :mod:`~reprolab.run.snapshot` is the restore);
- :mod:`~reprolab.run.conclude`: fatal event -> vmcore -> report -> outcome
  (:mod:`~reprolab.run.hangcapture`, :mod:`~reprolab.run.observation`,
  :mod:`~reprolab.run.verdict`);
- :mod:`~reprolab.run.loop`: the one repro loop (plugin, ``reprolab repro``, bisect oracle);
- :mod:`~reprolab.run.record`: attempt files, per-case results, ``results.jsonl``;
- :mod:`~reprolab.run.attempt`: the attempt's result as data.

Nothing is imported here: ``reprolab.run.verdict`` is needed by the case spec without
pulling libvirt in.
"""
