{# part as a percentage of whole, to one decimal; null when whole is 0. The one rounding rule
   of every percentage the analyses print. #}
{% macro percent_of(part, whole) -%}
    round(100.0 * {{ part }} / nullif({{ whole }}, 0), 1)
{%- endmacro %}
