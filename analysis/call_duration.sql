-- How long do completed calls last (telephony_data.duration, seconds: average and 95th percentile)?
-- p95 is percentile_disc: the duration of a real call, the first at or above 95% of them.
SELECT
    count(*) AS completed_calls,
    round(avg((telephony_data ->> 'duration')::integer), 1) AS average_seconds,
    percentile_disc(0.95) WITHIN GROUP (ORDER BY (telephony_data ->> 'duration')::integer)
        AS p95_seconds
FROM executions
WHERE status = 'completed'
    AND telephony_data ->> 'duration' IS NOT NULL;
