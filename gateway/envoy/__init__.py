"""Envoy as the data plane: the Python process renders its configuration and supervises it.

``render`` turns a :class:`~gateway.envoy.view.DataPlaneView` (settings + catalog snapshot + health)
into Envoy resources as plain dicts (pure functions, tested by comparison and by running Envoy);
``files`` publishes them as watched xDS files; ``supervisor`` runs the Envoy process; ``controlplane``
keeps the published resources in step with the registry; ``usage`` turns Envoy's access-log stream
into usage records and metrics.
"""
