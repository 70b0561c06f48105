-- Which calls failed (status `failed` or `error`), newest first, and what did Bolna say went wrong?
SELECT
    id,
    agent_id,
    created_at,
    status,
    error_message
FROM executions
WHERE status IN ('failed', 'error')
ORDER BY created_at DESC, id DESC;
