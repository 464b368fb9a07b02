"""Alembic migrations of the gateway's store, run at start-up (`Store.open`)."""
