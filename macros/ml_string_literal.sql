{#-
    Render a value as a safely escaped SQL string literal, so a var such as `campaign_id` never
    reaches the SQL as raw text.
-#}

{% macro ml_string_literal(value) -%}
    {{ return(adapter.dispatch('ml_string_literal', 'mmp')(value)) }}
{%- endmacro %}

{#- Standard SQL, and DuckDB: a quote inside a literal is doubled; backslashes are plain. -#}
{% macro default__ml_string_literal(value) -%}
    '{{ (value | string).replace("'", "''") }}'
{%- endmacro %}

{% macro duckdb__ml_string_literal(value) -%}
    {{ default__ml_string_literal(value) }}
{%- endmacro %}

{#- BigQuery: backslash escapes; a raw newline would end a quoted literal, so escape it too. -#}
{% macro bigquery__ml_string_literal(value) -%}
    {%- set escaped = (value | string)
        .replace('\\', '\\\\')
        .replace("'", "\\'")
        .replace('\n', '\\n')
        .replace('\r', '\\r') -%}
    '{{ escaped }}'
{%- endmacro %}
