with source as (

    select * from {{ source('raw', 'campaigns') }}

),

renamed as (

    select
        cast(campaign_id as string) as campaign_id,
        cast(campaign_name as string) as campaign_name,
        cast(channel as string) as channel,
        cast(start_date as date) as start_date,
        cast(conversion_window_days as int64) as conversion_window_days,
        cast(status as string) as status,
        -- money, in the shop's currency: null stays null, so the tests catch a missing value
        cast(cost_per_contact as {{ ml_type_float() }}) as cost_per_contact,
        cast(value_per_conversion as {{ ml_type_float() }}) as value_per_conversion,
        cast(budget as {{ ml_type_float() }}) as budget

    from source

)

select * from renamed
