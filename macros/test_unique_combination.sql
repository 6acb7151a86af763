{#- A composite key: no two rows share the same values of `columns`. -#}

{% test unique_combination(model, columns) %}

with keyed as (

    select
        {{ columns | join(',\n        ') }},
        count(*) as n_rows
    from {{ model }}
    group by {{ columns | join(', ') }}

)

select * from keyed
where n_rows > 1

{% endtest %}
