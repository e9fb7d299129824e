import os

# Tests never read the developer's own configuration by accident.
for _name in [n for n in os.environ if n.startswith("LIFECYCLE_") and n not in (
    "LIFECYCLE_KAFKA_BOOTSTRAP", "LIFECYCLE_POSTGRES_DSN", "LIFECYCLE_REDIS_URL", "LIFECYCLE_VENV")]:
    del os.environ[_name]

from tests.fix_servers import servers, settings, worker  # noqa: E402,F401
