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
