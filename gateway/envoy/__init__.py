"""Envoy as the data plane: the Python process renders its configuration and supervises it.

``render`` turns a :class:`~gateway.envoy.view.DataPlaneView` (settings + catalog snapshot + health)
into Envoy resources as plain dicts (pure functions, tested by comparison and by running Envoy);
``ads`` serves them to Envoy over one xDS stream; ``supervisor`` runs the Envoy process; ``controlplane``
keeps the published resources in step with the registry; ``usage`` turns Envoy's access-log stream
into usage records and metrics.
"""
