"""The worker's HTTP service: the route table, its auth middleware, the OpenAPI document built
from it and the `/v1` views (docs/architecture.md, "HTTP: one route table")."""
