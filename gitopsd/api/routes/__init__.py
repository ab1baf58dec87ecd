"""The API's routes by concern, each module's `routes(context)` registered by api/app.py's create_app."""
