"""Cloud-vs-device reranking simulation (`dir-cloud simulate`, docs/simulation.md).

    world = build_world(run.model, data, users=1000)                       # world.py: users, requests, truth
    measured = measure_device(world, "bundle/", scorer, run.embedding_version)   # device_latency.py
    study = run_study(world, torch_scorer(run.model), measured.samples_ms, SimConfig(), K=5)   # study.py
    write_report(study, "docs/simulation", context={}, device=measured)   # report.py

Modules, one job each: config (parameters), world (simulated users from the synthetic world), history
(click logs and delayed views), queueing (M/M/c events, Erlang C), streams (common random numbers),
timing (response and history-read times per path), engine (one path's requests), scoring (the run's
model as a batched scorer), device_latency (the real runtime, timed), summary (statistics), study
(paths and sweeps), report (files and plots).
"""
