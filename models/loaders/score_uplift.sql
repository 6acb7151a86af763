{#-
    The scoring population: every eligible customer of every campaign, upcoming ones included,
    with the same features as train_uplift and no outcome.
-#}

with features as (

    select * from {{ ref('customer_features') }}

),

final as (

    select
        campaign_id,
        customer_id,
        as_of_date,
        campaign_channel,
        age,
        gender,
        region,
        preferred_channel,
        channel_match,
        tenure_days,
        recency_days,
        frequency_30d,
        frequency_90d,
        frequency_365d,
        monetary_30d,
        monetary_90d,
        monetary_365d,
        avg_order_value_365d,
        prior_campaigns_treated,
        prior_campaigns_converted

    from features
    {{ ml_campaign_filter('campaign_id') }}

)

select * from final
