{#-
    One row per campaign and eligible customer (signed up before the campaign starts), with
    features as of the campaign's start date. Point in time: only orders and campaign outcomes
    strictly before as_of_date count, so training rows see what scoring rows will see.
-#}

with campaigns as (

    select * from {{ ref('stg_raw__campaigns') }}

),

customers as (

    select * from {{ ref('stg_raw__customers') }}

),

orders as (

    select * from {{ ref('stg_raw__orders') }}

),

outcomes as (

    select * from {{ ref('campaign_outcomes') }}

),

population as (

    select
        campaigns.campaign_id,
        campaigns.channel as campaign_channel,
        campaigns.start_date as as_of_date,
        customers.customer_id,
        customers.signup_date,
        customers.birth_year,
        customers.gender,
        customers.region,
        customers.preferred_channel

    from campaigns
    inner join customers
        on customers.signup_date < campaigns.start_date

),

order_history as (

    select
        population.campaign_id,
        population.customer_id,
        max(orders.ordered_on) as last_ordered_on,
        {%- for days in [30, 90, 365] %}
        count(
            case
                when orders.ordered_on >= {{ ml_date_add_days('population.as_of_date', -days) }}
                    then orders.order_id
            end
        ) as frequency_{{ days }}d,
        {#- summed as an exact decimal: a float sum's last bit depends on the order in which
            the warehouse's threads add, so features (and models) would change between builds #}
        sum(
            case
                when orders.ordered_on >= {{ ml_date_add_days('population.as_of_date', -days) }}
                    then cast(orders.amount as {{ ml_type_decimal() }})
                else 0
            end
        ) as monetary_{{ days }}d{{ ',' if not loop.last }}
        {%- endfor %}

    from population
    inner join orders
        on
            population.customer_id = orders.customer_id
            and orders.ordered_on < population.as_of_date

    group by population.campaign_id, population.customer_id

),

campaign_history as (

    select
        population.campaign_id,
        population.customer_id,
        sum(outcomes.treatment) as prior_campaigns_treated,
        sum(
            case when outcomes.window_end <= population.as_of_date then outcomes.converted else 0 end
        ) as prior_campaigns_converted

    from population
    inner join outcomes
        on
            population.customer_id = outcomes.customer_id
            and outcomes.window_start < population.as_of_date

    group by population.campaign_id, population.customer_id

),

final as (

    select
        population.campaign_id,
        population.customer_id,
        population.as_of_date,
        population.campaign_channel,
        cast(extract(year from population.as_of_date) - population.birth_year as int64) as age,
        population.gender,
        population.region,
        population.preferred_channel,
        cast(
            case when population.preferred_channel = population.campaign_channel then 1 else 0 end
            as int64
        ) as channel_match,
        {{ ml_days_between('population.signup_date', 'population.as_of_date') }} as tenure_days,
        {{ ml_days_between('order_history.last_ordered_on', 'population.as_of_date') }}
            as recency_days,
        {%- for days in [30, 90, 365] %}
        cast(coalesce(order_history.frequency_{{ days }}d, 0) as int64) as frequency_{{ days }}d,
        {%- endfor %}
        {%- for days in [30, 90, 365] %}
        cast(coalesce(order_history.monetary_{{ days }}d, 0) as {{ ml_type_float() }})
            as monetary_{{ days }}d,
        {%- endfor %}
        cast(order_history.monetary_365d as {{ ml_type_float() }})
            / nullif(order_history.frequency_365d, 0) as avg_order_value_365d,
        cast(coalesce(campaign_history.prior_campaigns_treated, 0) as int64)
            as prior_campaigns_treated,
        cast(coalesce(campaign_history.prior_campaigns_converted, 0) as int64)
            as prior_campaigns_converted

    from population
    left join order_history
        on
            population.campaign_id = order_history.campaign_id
            and population.customer_id = order_history.customer_id
    left join campaign_history
        on
            population.campaign_id = campaign_history.campaign_id
            and population.customer_id = campaign_history.customer_id

)

select * from final
