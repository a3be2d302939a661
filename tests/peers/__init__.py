"""Real protocol peers for integration tests and benchmarks.

Everything here talks only to 127.0.0.1, starts processes it owns and stops them by PID,
and waits with explicit deadlines.

- :mod:`tests.peers.ports`    -- ``free_port()``
- :mod:`tests.peers.wait`     -- ``wait_until(predicate, timeout, interval, what)``
- :mod:`tests.peers.orthanc`  -- ``OrthancPeer`` (Orthanc + DICOMweb plugin)
- :mod:`tests.peers.pubsub`   -- ``PubSubEmulator`` (Google Cloud Pub/Sub emulator)
- :mod:`tests.peers.dcmtk`    -- dcmtk SCU wrappers and ``StoreScpPeer``
- :mod:`tests.peers.datasets` -- synthetic DICOM Part-10 files
"""
