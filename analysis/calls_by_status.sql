-- How many calls are in each status, and what percentage of all calls is that?
SELECT
    status,
    count(*) AS calls,
    round(100.0 * count(*) / sum(count(*)) OVER (), 1) AS percent_of_calls
FROM executions
GROUP BY status
ORDER BY calls DESC, status;
