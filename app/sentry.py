"""Error tracking with Sentry, on only when SENTRY_DSN is set."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Called from the factory, so under Gunicorn it runs in the worker after gevent has patched."""
    dsn = app.config["SENTRY_DSN"]
    if not dsn:
        return
    import sentry_sdk  # only here: the SDK's import adds ~0.1 s to a worker's boot

    sentry_sdk.init(
        dsn=dsn,
        environment=app.config["SENTRY_ENVIRONMENT"],
        release=app.config["APP_RELEASE"],
        # performance tracing costs quota and latency; opt in per deployment
        traces_sample_rate=app.config["SENTRY_TRACES_SAMPLE_RATE"],
        # The successor of send_default_pii=False (deprecated in sentry-sdk 2.7x): no user
        # identity, cookies, request bodies or local variables leave the service; headers and
        # query strings only after the SDK's denylist has scrubbed them.
        # https://docs.sentry.io/platforms/python/configuration/options/#data_collection
        data_collection={
            "user_info": False,
            "cookies": {"mode": "off"},
            "http_bodies": [],
            "http_headers": {"request": {"mode": "denylist"}},
            "url_query_params": {"mode": "denylist"},
            "stack_frame_variables": False,
        },
    )
