{#-
    Recompute recency and the 30/90/365-day counts and sums from the orders, counting days
    back from the as-of date instead of shifting dates, and keep only orders at least one day
    before it. Any row returned is a feature that disagrees, or one that saw the as-of day or
    later (recency below 1, or more orders than existed strictly before the as-of date).
-#}

with features as (

    select * from {{ ref('customer_features') }}

),

orders as (

    select * from {{ ref('stg_raw__orders') }}

),

history as (

    select
        features.campaign_id,
        features.customer_id,
        {{ ml_days_between('orders.ordered_on', 'features.as_of_date') }} as days_before

    from features
    inner join orders
        on features.customer_id = orders.customer_id

),

recomputed as (

    select
        campaign_id,
        customer_id,
        min(case when days_before >= 1 then days_before end) as recency_days,
        count(case when days_before between 1 and 30 then 1 end) as frequency_30d,
        count(case when days_before between 1 and 90 then 1 end) as frequency_90d,
        count(case when days_before between 1 and 365 then 1 end) as frequency_365d,
        count(case when days_before >= 1 then 1 end) as orders_before

    from history
    group by campaign_id, customer_id

),

compared as (

    select
        features.campaign_id,
        features.customer_id,
        features.recency_days,
        recomputed.recency_days as expected_recency_days,
        features.frequency_30d,
        features.frequency_90d,
        features.frequency_365d,
        coalesce(recomputed.orders_before, 0) as orders_before,
        coalesce(recomputed.frequency_30d, 0) as expected_frequency_30d,
        coalesce(recomputed.frequency_90d, 0) as expected_frequency_90d,
        coalesce(recomputed.frequency_365d, 0) as expected_frequency_365d

    from features
    left join recomputed
        on
            features.campaign_id = recomputed.campaign_id
            and features.customer_id = recomputed.customer_id

)

select * from compared
where
    coalesce(recency_days, -1) != coalesce(expected_recency_days, -1)
    or recency_days < 1
    or frequency_30d != expected_frequency_30d
    or frequency_90d != expected_frequency_90d
    or frequency_365d != expected_frequency_365d
    or frequency_365d > orders_before
