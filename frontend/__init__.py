"""The browser side of NextFrame: the dashboard today, the playground next (ARCHITECTURE.md).

Server-rendered Django templates and static assets, no build step. What lives here:
- `dashboard`: log in (Django auth), see your organisations and their keys; django-axes' lockout
  page (`login_locked_out`, named by the AXES_LOCKOUT_CALLABLE setting);
- `templates/frontend/`: the pages (found through the app's template folder, APP_DIRS);
- `urls`: /dashboard/, /accounts/login/, /accounts/logout/ and the root redirect.

How it plugs in: `frontend` is in INSTALLED_APPS (`FrontendConfig`) and `nextframe.urls` includes
`frontend.urls` at the site root. Pages call the public REST API (/v1/) with the session and its
CSRF token, and the WebSocket with a ticket (docs/protocol.md): the frontend owns no data of its own.
"""
