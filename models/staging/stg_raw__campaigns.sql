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
        cast(status as string) as status

    from source

)

select * from renamed
