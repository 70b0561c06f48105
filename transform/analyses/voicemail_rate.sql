-- What percentage of all calls was answered by voice mail?
with agent_daily as (

    select * from {{ ref('bolna__agent_daily') }}

)

select
    sum(voicemail_calls) as voicemail_calls,
    sum(calls) as calls,
    {{ percent_of('sum(voicemail_calls)', 'sum(calls)') }} as voicemail_rate_percent
from agent_daily
