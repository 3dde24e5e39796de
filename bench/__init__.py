"""Benchmark suite: Multi-Paxos against an async-replication baseline and PySyncObj.

Everything runs as separate processes on 127.0.0.1: node processes (one per
cluster member) and load-generator processes (``bench.loadgen``). Entry point:
``python -m bench`` (``--quick`` for the one-minute subset, ``--profile`` to
profile the leader). See ``bench/README.md``.

Modules:

* :mod:`bench.async_node` -- the async-replication baseline node;
* :mod:`bench.pso_node`   -- a PySyncObj replicated counter behind the same client protocol;
* :mod:`bench.loadgen`    -- the load client process (Submit / SubmitAck, per-message latency);
* :mod:`bench.clusters`   -- start, probe, kill and stop clusters of any of the three systems;
* :mod:`bench.harness`    -- one measured run: saturation, fixed rate, failover;
* :mod:`bench.suite`      -- the quick and full matrices, repetitions, aggregation;
* :mod:`bench.report`     -- JSON, Markdown table and PNG plots;
* :mod:`bench.machine`    -- the machine description.
"""
