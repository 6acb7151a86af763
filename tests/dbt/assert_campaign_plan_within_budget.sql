{#- A campaign's plan never spends more than its budget. Any row returned overspends. -#}

select
    campaign_id,
    run_id,
    spend,
    budget

from {{ ref('campaign_plan') }}
where spend > budget
