"""`ml serve`: online scoring over HTTP with FastAPI.

`run` resolves the model against the registry, binds the port and runs uvicorn; `app.create_app`
builds the app for one model; `schema` is the request schema and record scoring, `guard` the
auth, body-size and content-type checks, `body` the reading of /predict bodies and the bounded
422 for invalid ones; `by_id` answers requests by entity key from the online store, `reload`
swaps in a moved alias's version, `metrics` is /metrics, `served` the model a request is
answered with. Serving never imports training code.
"""
