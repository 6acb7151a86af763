with source as (

    select * from {{ source('raw', 'orders') }}

),

renamed as (

    select
        cast(order_id as int64) as order_id,
        cast(customer_id as int64) as customer_id,
        cast(ordered_at as timestamp) as ordered_at,
        cast(cast(ordered_at as timestamp) as date) as ordered_on,
        cast(amount as {{ ml_type_float() }}) as amount

    from source

)

select * from renamed
