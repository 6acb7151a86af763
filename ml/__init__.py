"""Modern ML Pipeline: dbt owns the data, `ml` owns the models."""
