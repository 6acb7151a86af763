{#- Date arithmetic differs between warehouses; models call these instead. -#}

{% macro ml_date_add_days(date_expr, days) -%}
    {{ return(adapter.dispatch('ml_date_add_days', 'mmp')(date_expr, days)) }}
{%- endmacro %}

{% macro default__ml_date_add_days(date_expr, days) -%}
    cast(({{ date_expr }}) + cast({{ days }} as integer) as date)
{%- endmacro %}

{% macro bigquery__ml_date_add_days(date_expr, days) -%}
    date_add({{ date_expr }}, interval cast({{ days }} as int64) day)
{%- endmacro %}


{#- Whole days from start to end: positive when end is later. -#}
{% macro ml_days_between(start_date, end_date) -%}
    {{ return(adapter.dispatch('ml_days_between', 'mmp')(start_date, end_date)) }}
{%- endmacro %}

{% macro default__ml_days_between(start_date, end_date) -%}
    cast(date_diff('day', cast({{ start_date }} as date), cast({{ end_date }} as date)) as int64)
{%- endmacro %}

{% macro bigquery__ml_days_between(start_date, end_date) -%}
    date_diff(cast({{ end_date }} as date), cast({{ start_date }} as date), day)
{%- endmacro %}
