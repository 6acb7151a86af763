{#-
    What happened to each assigned customer in a campaign's conversion window
    [start_date, start_date + conversion_window_days). The label for train_uplift, and the
    history behind the prior_campaigns_* features.
-#}

with campaigns as (

    select * from {{ ref('stg_raw__campaigns') }}

),

assignments as (

    select * from {{ ref('stg_raw__campaign_assignments') }}

),

orders as (

    select * from {{ ref('stg_raw__orders') }}

),

windows as (

    select
        assignments.campaign_id,
        assignments.customer_id,
        assignments.is_treated as treatment,
        campaigns.start_date as window_start,
        {{ ml_date_add_days('campaigns.start_date', 'campaigns.conversion_window_days') }}
            as window_end

    from assignments
    inner join campaigns
        on assignments.campaign_id = campaigns.campaign_id

),

window_orders as (

    select
        windows.campaign_id,
        windows.customer_id,
        count(*) as orders_in_window,
        -- an exact decimal sum, so the revenue is the same in every build (see ml_type_decimal)
        sum(cast(orders.amount as {{ ml_type_decimal() }})) as revenue_in_window

    from windows
    inner join orders
        on
            windows.customer_id = orders.customer_id
            and orders.ordered_on >= windows.window_start
            and orders.ordered_on < windows.window_end

    group by windows.campaign_id, windows.customer_id

),

final as (

    select
        windows.campaign_id,
        windows.customer_id,
        windows.treatment,
        windows.window_start,
        windows.window_end,
        cast(case when window_orders.orders_in_window > 0 then 1 else 0 end as int64)
            as converted,
        cast(coalesce(window_orders.orders_in_window, 0) as int64) as orders_in_window,
        cast(coalesce(window_orders.revenue_in_window, 0) as {{ ml_type_float() }})
            as revenue_in_window

    from windows
    left join window_orders
        on
            windows.campaign_id = window_orders.campaign_id
            and windows.customer_id = window_orders.customer_id

)

select * from final
