-- What are one agent's latest calls, newest first (the seed's /api/executions?agent_id=…&page_size=…)?
-- psql -v agent_id=<agent id> -v page_size=20 -f analysis/agent_executions.sql
SELECT *
FROM executions
WHERE agent_id = :'agent_id'
ORDER BY created_at DESC, id DESC
LIMIT :'page_size';
