-- What did calls cost each day (total_cost in cents, summed by the UTC date of created_at)?
-- (created_at is a `timestamp` column holding UTC, so its date is the UTC date.)
SELECT
    created_at::date AS day,
    count(*) AS calls,
    sum(total_cost) AS total_cost_cents
FROM executions
GROUP BY day
ORDER BY day;
