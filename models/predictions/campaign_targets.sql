{#-
    Whom to contact in each campaign: customers ranked by expected incremental net value
    (estimated uplift x value of a conversion - cost of the contact) from the latest scoring of
    the uplift model, those worth nothing or less dropped, then taken in that order while the
    campaign's budget lasts. Every contact of a campaign costs the same, so the first customers
    by net value are also the most net value the budget can buy.
-#}

{{ config(tags=['predictions']) }}

with latest_scores as (

    -- the current scores: per campaign, the slice `ml score` wrote last
    select * from {{ source('predictions', 'xgboost_x_learner__current') }}

),

campaigns as (

    select * from {{ ref('stg_raw__campaigns') }}

),

valued as (

    select
        latest_scores.campaign_id,
        latest_scores.customer_id,
        latest_scores.score as uplift,
        latest_scores.score * campaigns.value_per_conversion
        - campaigns.cost_per_contact as expected_net_value,
        campaigns.cost_per_contact as contact_cost,
        campaigns.budget,
        latest_scores.model_name,
        latest_scores.model_version,
        latest_scores.run_id,
        latest_scores.scored_at

    from latest_scores
    inner join campaigns
        on latest_scores.campaign_id = campaigns.campaign_id

),

ranked as (

    select
        *,
        row_number() over (
            partition by campaign_id
            order by expected_net_value desc, customer_id
        ) as uplift_rank,
        -- summed as exact decimals: a float running sum could drift past the budget by a bit
        sum(cast(contact_cost as {{ ml_type_decimal() }})) over (
            partition by campaign_id
            order by expected_net_value desc, customer_id
            rows between unbounded preceding and current row
        ) as cumulative_spend_exact

    from valued
    where expected_net_value > 0

),

final as (

    select
        campaign_id,
        customer_id,
        uplift,
        uplift_rank,
        model_name,
        model_version,
        run_id,
        scored_at,
        expected_net_value,
        contact_cost,
        cast(cumulative_spend_exact as {{ ml_type_float() }}) as cumulative_spend

    from ranked
    where cumulative_spend_exact <= cast(budget as {{ ml_type_decimal() }})

)

select * from final
