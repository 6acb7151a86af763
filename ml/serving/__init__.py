"""`ml serve`: online scoring over HTTP with FastAPI.

`run` resolves the model against the registry and runs uvicorn; `app.create_app` builds the app
for one model; `schema` is the request schema and record scoring, `guard` the auth, body-size and
content-type checks. Serving never imports training code.
"""
