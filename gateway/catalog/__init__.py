"""The catalog: facilities, backends, models, datasets, deployments and usage provenance.

``models`` is the schema (SQLAlchemy ORM), ``migrate`` applies the Alembic migrations in the repo's
top-level ``migrations/``, ``db`` opens engines, ``recorder`` writes usage in batches off the hot
path, ``sync`` pushes catalog backends to the router, ``api`` is the admin REST API, ``apply`` the
declarative ``sonic-gateway apply`` client.
"""
