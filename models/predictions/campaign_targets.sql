{#-
    Whom to contact in each campaign: customers ranked by estimated uplift from the latest
    scoring of the uplift model, kept while the uplift is positive and within the budget.
-#}

{{ config(tags=['predictions']) }}

with latest_scores as (

    -- the current scores: per campaign, the slice `ml score` wrote last
    select * from {{ source('predictions', 'xgboost_x_learner__current') }}

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
