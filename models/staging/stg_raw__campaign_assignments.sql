with source as (

    select * from {{ source('raw', 'campaign_assignments') }}

),

renamed as (

    select
        cast(campaign_id as string) as campaign_id,
        cast(customer_id as int64) as customer_id,
        cast(group_name as string) as group_name,
        cast(case when group_name = 'treatment' then 1 else 0 end as int64) as is_treated,
        cast(assigned_at as timestamp) as assigned_at

    from source

)

select * from renamed
