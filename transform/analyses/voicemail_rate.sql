-- What percentage of all calls was answered by voice mail?
with agent_daily as (

    select * from {{ ref('bolna__agent_daily') }}

)

select
    sum(voicemail_calls) as voicemail_calls,
    sum(calls) as calls,
    round(100.0 * sum(voicemail_calls) / nullif(sum(calls), 0), 1) as voicemail_rate_percent
from agent_daily
