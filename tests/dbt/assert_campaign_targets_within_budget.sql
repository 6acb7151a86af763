{#-
    A campaign's target list never costs more than its budget: no running spend above it, and
    the contact costs (summed as exact decimals) not above it either. Any row returned is a
    campaign and run whose targets overspend.
-#}

with targets as (

    select * from {{ ref('campaign_targets') }}

),

campaigns as (

    select * from {{ ref('stg_raw__campaigns') }}

),

spent as (

    select
        campaign_id,
        run_id,
        max(cumulative_spend) as max_cumulative_spend,
        cast(sum(cast(contact_cost as {{ ml_type_decimal() }})) as {{ ml_type_float() }}) as spend

    from targets
    group by campaign_id, run_id

),

compared as (

    select
        spent.*,
        campaigns.budget

    from spent
    left join campaigns
        on spent.campaign_id = campaigns.campaign_id

)

select * from compared
where
    budget is null
    or max_cumulative_spend > budget
    or spend > budget
