{#-
    Whom to contact in each campaign: customers ranked by estimated uplift from the latest
    scoring of the uplift model, kept while the uplift is positive and within the budget.
-#}

{{ config(tags=['predictions']) }}

with source as (

    select * from {{ source('predictions', 'xgboost_x_learner') }}

),

latest_scoring as (

    -- one scoring per campaign: the most recent
    select
        campaign_id,
        max(scored_at) as scored_at

    from source
    group by campaign_id

),

latest_scores as (

    select source.*

    from source
    inner join latest_scoring
        on
            source.campaign_id = latest_scoring.campaign_id
            and source.scored_at = latest_scoring.scored_at

),

ranked as (

    select
        campaign_id,
        customer_id,
        score as uplift,
        row_number() over (
            partition by campaign_id
            order by score desc, customer_id
        ) as uplift_rank,
        model_name,
        model_version,
        run_id,
        scored_at

    from latest_scores

),

final as (

    select * from ranked
    where
        uplift > {{ var('min_uplift', 0) }}
        and uplift_rank <= {{ var('contact_budget', 10000) }}

)

select * from final
