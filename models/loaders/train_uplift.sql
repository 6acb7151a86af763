{#-
    The training population: customers randomized in completed campaigns, with the treatment
    flag, the outcome in the conversion window and the features as of the campaign start.
-#}

with campaigns as (

    select * from {{ ref('stg_raw__campaigns') }}

),

outcomes as (

    select * from {{ ref('campaign_outcomes') }}

),

features as (

    select * from {{ ref('customer_features') }}

),

joined as (

    select
        outcomes.campaign_id,
        outcomes.customer_id,
        outcomes.treatment,
        outcomes.converted,
        outcomes.revenue_in_window,
        features.as_of_date,
        features.campaign_channel,
        features.age,
        features.gender,
        features.region,
        features.preferred_channel,
        features.channel_match,
        features.tenure_days,
        features.recency_days,
        features.frequency_30d,
        features.frequency_90d,
        features.frequency_365d,
        features.monetary_30d,
        features.monetary_90d,
        features.monetary_365d,
        features.avg_order_value_365d,
        features.prior_campaigns_treated,
        features.prior_campaigns_converted

    from outcomes
    inner join campaigns
        on outcomes.campaign_id = campaigns.campaign_id
    inner join features
        on
            outcomes.campaign_id = features.campaign_id
            and outcomes.customer_id = features.customer_id
    where campaigns.status = 'completed'

),

final as (

    select * from joined
    {{ ml_campaign_filter('campaign_id') }}

)

select * from final
