{#-
    What each campaign's target list costs and is expected to bring: one row per campaign and
    scoring run (so per model version). The expected figures do not come from the model's own
    scores: they come from the held-out randomized evaluation of the same run
    (`<recipe>__policy`: incremental conversions per customer of the population when treating
    the top `share` by score, with a 95% interval, and the same for random targeting), read at
    the share of the population actually targeted and scaled to the campaign's population.

    The curve is known on a grid of shares; between two grid points it is interpolated linearly
    (point estimate and both interval bounds alike), and below the first point from (0, 0):
    treating nobody brings nothing, exactly. A run without a curve gives null figures, which the
    not_null tests report.
-#}

{% set curve = [
    'incremental_per_customer',
    'incremental_ci_low',
    'incremental_ci_high',
    'random_per_customer',
    'random_ci_low',
    'random_ci_high',
] %}

{{ config(tags=['predictions']) }}

with latest_scores as (

    select * from {{ source('predictions', 'xgboost_x_learner__current') }}

),

policy as (

    select * from {{ source('predictions', 'xgboost_x_learner__policy') }}

),

targets as (

    select * from {{ ref('campaign_targets') }}

),

campaigns as (

    select * from {{ ref('stg_raw__campaigns') }}

),

populations as (

    -- everyone scored for the campaign: the population the targeted share is a share of
    select
        campaign_id,
        run_id,
        model_name,
        model_version,
        count(*) as population

    from latest_scores
    group by campaign_id, run_id, model_name, model_version

),

selections as (

    select
        campaign_id,
        run_id,
        count(*) as customers_targeted,
        sum(cast(contact_cost as {{ ml_type_decimal() }})) as spend

    from targets
    group by campaign_id, run_id

),

sized as (

    -- a left join to campaigns: a scored campaign missing there shows as a null budget
    select
        populations.campaign_id,
        populations.model_name,
        populations.model_version,
        populations.run_id,
        campaigns.budget,
        campaigns.cost_per_contact,
        campaigns.value_per_conversion,
        cast(coalesce(selections.spend, 0) as {{ ml_type_float() }}) as spend,
        coalesce(selections.customers_targeted, 0) as customers_targeted,
        populations.population,
        cast(coalesce(selections.customers_targeted, 0) as {{ ml_type_float() }})
        / populations.population as share_targeted

    from populations
    left join campaigns
        on populations.campaign_id = campaigns.campaign_id
    left join selections
        on
            populations.campaign_id = selections.campaign_id
            and populations.run_id = selections.run_id

),

brackets as (

    -- the grid points of the run's curve either side of the share targeted
    select
        sized.campaign_id,
        sized.run_id,
        max(case when policy.share <= sized.share_targeted then policy.share end) as share_below,
        min(case when policy.share >= sized.share_targeted then policy.share end) as share_above

    from sized
    inner join policy
        on sized.run_id = policy.run_id
    group by sized.campaign_id, sized.run_id

),

weighted as (

    select
        sized.*,
        brackets.share_below,
        brackets.share_above,
        case
            when brackets.share_above = coalesce(brackets.share_below, 0) then 1.0
            else
                (sized.share_targeted - coalesce(brackets.share_below, 0))
                / (brackets.share_above - coalesce(brackets.share_below, 0))
        end as interpolation_weight

    from sized
    left join brackets
        on
            sized.campaign_id = brackets.campaign_id
            and sized.run_id = brackets.run_id

),

interpolated as (

    select
        weighted.*,
        {%- for column in curve %}
        coalesce(below.{{ column }}, 0)
        + weighted.interpolation_weight * (above.{{ column }} - coalesce(below.{{ column }}, 0))
        as {{ column }},
        {%- endfor %}
        above.n_holdout

    from weighted
    left join policy as below
        on
            weighted.run_id = below.run_id
            and weighted.share_below = below.share
    left join policy as above
        on
            weighted.run_id = above.run_id
            and weighted.share_above = above.share

),

conversions as (

    select
        *,
        incremental_per_customer * population as expected_incremental_conversions,
        incremental_ci_low * population as expected_incremental_conversions_ci_low,
        incremental_ci_high * population as expected_incremental_conversions_ci_high,
        random_per_customer * population as random_incremental_conversions,
        random_ci_low * population as random_incremental_conversions_ci_low,
        random_ci_high * population as random_incremental_conversions_ci_high

    from interpolated

),

revenue as (

    select
        *,
        {%- for figure in ['expected', 'random'] %}
        {%- for suffix in ['', '_ci_low', '_ci_high'] %}
        {{ figure }}_incremental_conversions{{ suffix }} * value_per_conversion
        as {{ figure }}_incremental_revenue{{ suffix }}{{ ',' if not loop.last }}
        {%- endfor %}{{ ',' if not loop.last }}
        {%- endfor %}

    from conversions

),

final as (

    select
        campaign_id,
        model_name,
        model_version,
        run_id,
        budget,
        cost_per_contact,
        value_per_conversion,
        spend,
        customers_targeted,
        population,
        share_targeted,
        {%- for figure in ['expected', 'random'] %}
        {{ figure }}_incremental_conversions,
        {{ figure }}_incremental_conversions_ci_low,
        {{ figure }}_incremental_conversions_ci_high,
        {{ figure }}_incremental_revenue,
        {{ figure }}_incremental_revenue_ci_low,
        {{ figure }}_incremental_revenue_ci_high,
        {{ figure }}_incremental_revenue - spend as {{ figure }}_net_value,
        {{ figure }}_incremental_revenue_ci_low - spend as {{ figure }}_net_value_ci_low,
        {{ figure }}_incremental_revenue_ci_high - spend as {{ figure }}_net_value_ci_high,
        {%- endfor %}
        n_holdout

    from revenue

)

select * from final
