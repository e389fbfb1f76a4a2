"""The SQL migrations, shipped inside the wheel as package data.

The ``.sql`` files stay plain files in the repository (``migrations/gatherer/``,
``migrations/production/``, ``migrations/roles.sql``), so an operator can still apply one by hand
with ``psql -v ON_ERROR_STOP=1 -f migrations/production/001_schema.sql``. Installed code never
looks beside site-packages for them: ``shared/migrate.py`` reads this package through
``importlib.resources``, so ``kalshi-data migrate`` works from any installed wheel.
"""
