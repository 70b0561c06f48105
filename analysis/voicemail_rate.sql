-- What percentage of all calls was answered by voice mail (answered_by_voice_mail)?
SELECT
    count(*) FILTER (WHERE answered_by_voice_mail) AS voicemail_calls,
    count(*) AS calls,
    round(100.0 * count(*) FILTER (WHERE answered_by_voice_mail) / nullif(count(*), 0), 1)
        AS voicemail_rate_percent
FROM executions;
