{#-
    Every value of `column_name` is at least `min_value` (above it when `inclusive` is false).
    Nulls pass: pair it with not_null where a value is required.
-#}

{% test at_least(model, column_name, min_value, inclusive=true) %}

select {{ column_name }}
from {{ model }}
where {{ column_name }} {{ '<' if inclusive else '<=' }} {{ min_value }}

{% endtest %}
