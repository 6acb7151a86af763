{#-
    `where <column> = '<campaign>'` when the `campaign_id` var is set, nothing otherwise; the
    loaders use it to build one campaign's population. The var goes through ml_string_literal,
    never into the SQL as raw text.
-#}

{% macro ml_campaign_filter(column='campaign_id') -%}
    {%- set campaign_id = var('campaign_id', none) -%}
    {%- if campaign_id is not none -%}
        where {{ column }} = {{ ml_string_literal(campaign_id) }}
    {%- endif -%}
{%- endmacro %}
