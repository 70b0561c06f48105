-- What percentage of all calls completed (status `completed`; pending calls count as not completed)?
SELECT
    count(*) FILTER (WHERE status = 'completed') AS completed_calls,
    count(*) AS calls,
    round(100.0 * count(*) FILTER (WHERE status = 'completed') / nullif(count(*), 0), 1)
        AS completion_rate_percent
FROM executions;
