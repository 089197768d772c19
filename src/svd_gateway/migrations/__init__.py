"""The job store's schema as versioned Alembic migrations (run by `Store` at start and by
`svd-triton gateway migrate`); shipped inside the package so an installed gateway upgrades its database."""
