"""bolna-api: the guide's GET /api/executions, served read-only from the dbt models."""
