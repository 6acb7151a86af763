{#- A 64-bit float: `float64` on BigQuery, `double` elsewhere (`float` is 32-bit on DuckDB). -#}

{% macro ml_type_float() -%}
    {{ return(adapter.dispatch('ml_type_float', 'mmp')()) }}
{%- endmacro %}

{% macro default__ml_type_float() -%}
    double
{%- endmacro %}

{% macro bigquery__ml_type_float() -%}
    float64
{%- endmacro %}

{#-
    An exact decimal for sums of money: `numeric` on BigQuery (38 digits, 9 after the point),
    the same `decimal(38, 9)` elsewhere. A float `sum` adds in whatever order the warehouse's
    threads finish, so its last bit changes from build to build; a decimal sum does not.
-#}

{% macro ml_type_decimal() -%}
    {{ return(adapter.dispatch('ml_type_decimal', 'mmp')()) }}
{%- endmacro %}

{% macro default__ml_type_decimal() -%}
    decimal(38, 9)
{%- endmacro %}

{% macro bigquery__ml_type_decimal() -%}
    numeric
{%- endmacro %}
