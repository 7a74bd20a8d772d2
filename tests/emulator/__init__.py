"""
A Kubernetes API emulator for tests (see README.md in this directory).

* ``tests.emulator.server.Emulator`` — the server (a kmock ``KubernetesEmulator`` subclass);
* ``tests.emulator.runner.run_emulator`` — run it on 127.0.0.1 in-process (async context manager);
* ``tests.emulator.fixtures`` — pytest fixtures ``k8s_emulator`` and ``k8s_kubeconfig``;
* ``python -m tests.emulator`` — run it as a separate process;
* ``tandem.api.admission`` (in the operator package, shared with ``tandem validate``) — admission: type meta,
  strict fields, metadata rules, CRD schema pruning, defaulting, validation, CEL rules.
"""
