with source as (

    select * from {{ source('raw', 'customers') }}

),

renamed as (

    select
        cast(customer_id as int64) as customer_id,
        cast(signup_date as date) as signup_date,
        cast(birth_year as int64) as birth_year,
        cast(gender as string) as gender,
        cast(region as string) as region,
        cast(preferred_channel as string) as preferred_channel

    from source

)

select * from renamed
